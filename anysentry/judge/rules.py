"""L1 rules (SPEC §9.3): the rule type, the built-in pack, and compiling custom policy rules.

Every pattern here, built-in or custom, is RE2: matching is linear in the subject, so neither a
hostile subject nor a user policy can stall the judge. A built-in rule is a list of *signals*; a
signal is one RE2 pattern plus, where a regex alone cannot tell a benign developer action from an
attack, a small check that confirms the hit (placeholders are not secrets, `| python -m json.tool`
does not execute its input, `rm -rf ./build` is not destructive). Checks only run on subjects whose
regex already matched, so the common benign path never reaches Python code."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import re2

from anysentry.events import kinds as K

RULE_LIMIT = 200
NAME_LIMIT = 80
MATCH_LIMIT = 1000
REASON_LIMIT = 200
RULE_VERDICTS = ("allow", "block", "escalate")
RULE_SEVERITIES = ("info", "low", "medium", "high", "critical")
RULE_ACTIONS = ("", "deny-exec", "deny-egress", "deny-file")
ANY_KIND = "*"

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


class PolicyError(ValueError):
    """A policy that cannot be used as given; the message names the rule and the problem."""


def re2_compile(pattern: str):
    """Compile with RE2 (no log noise on stderr); raises `re2.error`."""
    return re2.compile(pattern, _OPTIONS)


def re2_error_text(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


@dataclass(frozen=True, slots=True)
class Signal:
    """One RE2 pattern of a rule and an optional confirmation of its hit on the subject."""

    pattern: str
    check: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """An L1 rule. `on` is a judged kind or `*`; `category` empty means inferred (§10.2)."""

    name: str
    on: str
    pattern: str
    verdict: str
    severity: str
    description: str
    action: str = ""
    category: str = ""
    builtin: bool = False
    signals: tuple[Signal, ...] = ()

    @property
    def reason(self) -> str:
        """L1 reasons read `<rule name>: <description>` (§9.1)."""
        return f"{self.name}: {self.description}"

    def applies_to(self, kind: str) -> bool:
        return self.on == kind or (self.on == ANY_KIND and kind in K.JUDGED_KINDS)

    def matches(self, subject: str) -> bool:
        """Slow, self-contained evaluation (tests, tooling); the engine uses a combined RE2 set."""
        subject = clean_subject(subject)
        for signal in self.signals or (Signal(self.pattern),):
            if re2_compile(signal.pattern).search(subject) and (signal.check is None or signal.check(subject)):
                return True
        return False


_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)


def _groups(rx, text: str) -> Iterator[tuple[str | None, ...]]:
    """The groups of every non-overlapping match, left to right.

    Goes through RE2's byte-level match directly: the `str` wrapper maps every offset back to
    characters, which costs more than the search itself."""
    raw = getattr(rx, "_regexp", None)
    if raw is None or _UNANCHORED is None:
        for m in rx.finditer(text):
            yield m.groups()
        return
    data = text.encode("utf-8")
    pos, end = 0, len(data)
    while pos <= end:
        spans = raw.Match(_UNANCHORED, data, pos, end)
        start, stop = spans[0]
        if start < 0:
            return
        yield tuple(None if a < 0 else data[a:b].decode("utf-8", "replace") for a, b in spans[1:])
        pos = stop if stop > start else stop + 1


def clean_subject(subject: str) -> str:
    """Subjects may carry lone surrogates from JSON escapes; RE2 needs valid UTF-8."""
    try:
        subject.encode("utf-8")
        return subject
    except UnicodeEncodeError:
        return subject.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------------------------------
# checks: confirm a regex hit where a pattern alone would flag a benign developer action

def _tokens(args: str) -> list[str]:
    """Whitespace tokens with surrounding quotes removed; redirections and their files skipped."""
    out, skip = [], False
    for raw in args.split():
        if skip:
            skip = False
            continue
        tok = raw.strip("\"'")
        if tok in (">", ">>", "<", "<<", "2>", "2>>", "&>", "1>", "<<<"):
            skip = True
            continue
        if tok[:1] in "<>" or (tok[:1].isdigit() and tok[1:2] in "<>") or tok.startswith("&>"):
            continue
        out.append(tok)
    return out


_INTERPRETER = r"(sh|bash|zsh|dash|ash|ksh|python[0-9.]*|perl|ruby|php|node)"
_PIPE_PREFIX = r"\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:(?:\S*/)?env\s+(?:-\S+\s+)*(?:\w+=\S*\s+)*)?(?:\S*/)?"
_PIPE_TARGET = re2_compile(r"(?i)" + _PIPE_PREFIX + _INTERPRETER + r"(?:$|[\s;&|)])([^|;&)\n]*)")
# Python `re` only where a pattern is a plain literal search or anchored: linear either way
_DOWNLOADER = re.compile(r"\b(?:curl|wget|fetch|socat|aria2c)\b", re.IGNORECASE)
# flags that make an interpreter run code from argv (or print info) instead of reading its program from stdin
_CODE_FLAGS = {"python": "cmVh", "perl": "eEnpvVh", "ruby": "enpvh", "php": "rRFBEvhim", "node": "epvh"}
_LONG_NO_STDIN = ("--eval", "--print", "--version", "--help", "--check", "--command", "--module")


def _runs_stdin(interpreter: str, args: str) -> bool:
    """Does `| <interpreter> <args>` execute what is piped into it? (`| sh`, `| bash -s --`,
    `| python3 -`, `| node` do; `| python -m json.tool`, `| perl -pe …`, `| bash x.sh` do not)."""
    family = interpreter.lower().rstrip("0123456789.")
    code = _CODE_FLAGS.get(family, "c")
    for tok in _tokens(args):
        if tok in ("-", "--"):
            return True
        if tok.startswith("--"):
            if tok.split("=", 1)[0] in _LONG_NO_STDIN:
                return False
            continue
        if tok.startswith("-"):
            if any(ch in code for ch in tok[1:]):
                return False
            continue
        return False  # a script file: it runs, and the piped bytes are only its data
    return True


def _pipe_executes(text: str) -> bool:
    text = text.replace("||", " ; ")  # logical OR is not a pipe
    return any(_runs_stdin(interpreter, args or "") for interpreter, args in _groups(_PIPE_TARGET, text))


def _downloader_then_exec(text: str) -> bool:
    m = _DOWNLOADER.search(text)
    return m is not None and _pipe_executes(text[m.end():])


_EVAL = re2_compile(r"(?i)(?:^|[\s;&|(`\"'])eval\s+([^\n]*)")
_EVAL_SAFE = frozenset({
    "ssh-agent", "keychain", "pyenv", "pyenv-virtualenv-init", "rbenv", "nodenv", "goenv", "jenv", "plenv",
    "direnv", "conda", "micromamba", "mamba", "brew", "minikube", "docker-machine", "starship", "zoxide",
    "fnm", "mise", "rtx", "opam", "thefuck", "dircolors", "lesspipe", "lesspipe.sh", "luarocks", "asdf",
})


def _eval_payload(text: str) -> bool:
    """`eval` of anything but a well-known shell-init generator (`eval "$(ssh-agent -s)"`)."""
    for (rest,) in _groups(_EVAL, text):
        rest = (rest or "").lstrip("\"' ")
        if not rest:
            continue
        if rest.startswith(("$(", "`")):
            words = rest.lstrip("$(`").split()
            if words:
                tool = posixpath.basename(words[0].strip("\"'"))
                if tool in _EVAL_SAFE or (len(words) > 1 and words[1] == "completion"):
                    continue
        return True
    return False


_SYSTEM_DIRS = frozenset({"etc", "var", "usr", "boot", "root", "bin", "sbin", "lib", "lib32", "lib64", "libx32",
                          "sys", "proc", "dev", "home"})
# second-level directories whose removal is routine cleanup, not destruction
_ROUTINE = frozenset({("var", "tmp"), ("var", "cache"), ("root", ".cache"), ("root", ".npm"), ("root", ".yarn"),
                      ("root", ".pnpm-store"), ("root", ".gradle"), ("root", ".m2"), ("root", ".cargo"),
                      ("root", ".node-gyp"), ("root", ".bun"), ("root", ".deno")})
_GLOB = set("*?[")


def _dangerous_target(token: str, max_depth: int) -> bool:
    """`/`, home itself, a system directory or (depth 2) its direct children: a wipe, not a cleanup."""
    t = token.strip("\"'")
    for home in ("${HOME}", "$HOME"):
        if t.startswith(home):
            t = "~" + t[len(home):]
    home = t.startswith("~")
    if home:
        if t != "~" and not t.startswith("~/"):
            return False  # ~user
        t = "/home/~" + t[1:]
    if not t.startswith("/"):
        return False
    parts = [p for p in posixpath.normpath(t).split("/") if p]
    while parts and set(parts[-1]) <= _GLOB | {"."}:
        parts.pop()  # `/etc/*` is `/etc`
    if home:
        return len(parts) <= 2  # the home directory itself (or above it), not a project inside it
    if not parts:
        return True
    top = parts[0]
    if _GLOB & set(top):
        return True
    if top.startswith("$"):
        return len(parts) == 1
    if top.lower() not in _SYSTEM_DIRS or len(parts) > max_depth:
        return False
    if len(parts) == 2 and (top.lower(), parts[1]) in _ROUTINE:
        return False
    return True


_RM = re2_compile(r"(?i)(?:^|[\s;&|(`\"'])rm\s+([^;&|\n]*)")
_FIND = re2_compile(r"(?i)(?:^|[\s;&|(`\"'])find\s+([^;&|\n]*)")


def _destructive_rm(text: str) -> bool:
    for (args,) in _groups(_RM, text):
        flags, targets, options_done = set(), [], False
        for tok in _tokens(args or ""):
            if not options_done and tok == "--":
                options_done = True
            elif not options_done and tok.startswith("--"):
                flags.update({"recursive": "r", "force": "f"}.get(tok[2:], ""))
            elif not options_done and tok.startswith("-") and len(tok) > 1:
                flags.update(tok[1:].lower())
            else:
                targets.append(tok)
        if flags & {"r", "f"} and any(_dangerous_target(t, 2) for t in targets):
            return True
    return False


def _destructive_find(text: str) -> bool:
    for (args,) in _groups(_FIND, text):
        toks = _tokens(args or "")
        if "-delete" not in toks and not any(a == "-exec" and b == "rm" for a, b in zip(toks, toks[1:])):
            continue
        for tok in toks:
            if tok.startswith(("-H", "-L", "-P")) and len(tok) == 2:
                continue
            if tok[:1] in "-(!\\":
                break
            if _dangerous_target(tok, 1):
                return True
    return False


_PLACEHOLDER_PREFIXES = ("your", "$", "%", "<", "{", "[")
_PLACEHOLDER_WORDS = (
    "example", "changeme", "change_me", "change-me", "placeholder", "replace", "dummy", "sample", "redacted",
    "_here", "-here", "here_", "here-", "insert", "todo", "fixme", "fake", "xxxx", "****", "…", "...",
)
_CODE_OBJECTS = ("self.", "this.", "os.", "process.", "config.", "settings.", "args.", "opts.", "options.", "env.",
                 "params.", "cfg.", "conf.", "secrets.", "vault.", "ctx.", "context.", "request.", "req.", "props.")
_IDENT = re.compile(r"[A-Za-z_]+")
_REFERENCE_WORDS = ("key", "token", "secret", "pass", "cred", "env", "config", "var")


def is_placeholder(value: str) -> bool:
    """Template values, masks and references: `YOUR_API_KEY_HERE`, `<token>`, `${VAR}`, `xxxx…`,
    `****`, `changeme`, `example…`, `process.env.KEY`, `get_key()`, `self.api_key`, `api_key_var`."""
    v = value.strip("\"'`")
    low = v.lower()
    if low.startswith(_PLACEHOLDER_PREFIXES) or any(w in low for w in _PLACEHOLDER_WORDS):
        return True
    if len(set(low)) <= 2:
        return True
    if "(" in v or "[" in v:
        return True  # a call or subscript: code, not a literal
    if low.startswith(_CODE_OBJECTS) and not low.startswith("eyj"):
        return True
    # a bare identifier without digits naming a key/secret is a variable, not its value
    return _IDENT.fullmatch(v) is not None and any(w in low for w in _REFERENCE_WORDS)


_HTTP_START = re.compile(r"(?:[A-Z]{3,10} \S+ HTTP/[0-9.]+|HTTP/[0-9.]+ [0-9]{3}|:(?:method|authority|path|scheme|status)\b)")
_AUTH_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "x-auth-token",
    "x-amz-security-token", "cookie", "x-anthropic-api-key", "anthropic-api-key", "x-access-token",
})
_BENIGN_KEYS = ("page_token", "pagetoken", "page-token", "next_token", "nexttoken", "continuation_token",
                "continuationtoken", "sync_token", "synctoken", "resume_token", "csrf_token", "csrftoken", "xsrf_token")


def without_auth_headers(text: str) -> str:
    """The content with the authentication header lines of its HTTP head blanked.

    Credentials a client sends to its own API in `Authorization`/`x-api-key` are how the call works,
    not exfiltration; a key in the request line, another header or the body still counts."""
    if not _HTTP_START.match(text):
        return text
    head_end = text.find("\r\n\r\n", 0, 65536)
    if head_end < 0:
        head_end = text.find("\n\n", 0, 65536)
    if head_end < 0:
        head_end = len(text)
    lines = text[:head_end].split("\n")
    kept = ["" if line.split(":", 1)[0].strip().lower() in _AUTH_HEADERS else line for line in lines]
    return "\n".join(kept) + text[head_end:]


_KEY_WORDS = (r"(?:api[_-]?key|apikey|secret|secret[_-]?key|token|auth[_-]?token|password|passwd|passphrase"
              r"|credentials?|access[_-]?key|private[_-]?key)")
_ASSIGNMENT = (r"(?i)(?:^|[^a-z0-9])((?:[a-z0-9]+[_.-])*" + _KEY_WORDS + r")[\"']?\s*[:=]\s*[\"']?"
               r"([^\s\"'`,;&<>)\]}]{12,})")
_BEARER = r"(?i)(authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+([^\s\"'`,;&<>)\]}]{12,})"
_TOKEN_SHAPES = (r"(\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bsk-(?:proj-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{20,}"
                 r"|\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bxox[abposr]-[A-Za-z0-9-]{10,}"
                 r"|\bglpat-[A-Za-z0-9_-]{20,})")
_ASSIGNMENT_RX = re2_compile(_ASSIGNMENT)
_BEARER_RX = re2_compile(_BEARER)
_TOKEN_RX = re2_compile(_TOKEN_SHAPES)


_SECRET_PROBE = re2.Set.SearchSet(_OPTIONS)
for _pattern in (_ASSIGNMENT, _BEARER, _TOKEN_SHAPES):
    _SECRET_PROBE.Add(_pattern)
_SECRET_PROBE.Compile()
_SECRET_PROBE_MATCH = getattr(_SECRET_PROBE, "_set", _SECRET_PROBE).Match
_last_secret: tuple[str | None, bool] = (None, False)


def _secret_value(text: str) -> bool:
    """A real-looking credential outside the request's own auth headers: an api-key/secret/
    token/password assignment (value ≥ 12 characters) or a provider token shape (AKIA…, sk-…,
    ghp_…, xox…-), never a placeholder. The three secret signals share this check, so it keeps
    its last answer: one subject is scrubbed and probed once however many signals hit."""
    global _last_secret
    last = _last_secret
    if last[0] is text:
        return last[1]
    scrubbed = without_auth_headers(text)
    hits = _SECRET_PROBE_MATCH(scrubbed.encode("utf-8")) or ()
    found = False
    for index in sorted(hits):
        if index < 2:
            rx = _ASSIGNMENT_RX if index == 0 else _BEARER_RX
            found = any(not key.lower().endswith(_BENIGN_KEYS) and not is_placeholder(value)
                        for key, value in _groups(rx, scrubbed))
        else:
            found = any(not is_placeholder(token) for (token,) in _groups(_TOKEN_RX, scrubbed))
        if found:
            break
    _last_secret = (text, found)
    return found


# ---------------------------------------------------------------------------------------------
# the built-in pack, in normative order (§9.3)

_SHELL = r"(?:ba|z|k|da)?sh"
_PIPE_INTO = r"(?:^|[^|])" + _PIPE_PREFIX + _INTERPRETER + r"(?:$|[\s;&|)])"
_BLOCK_DEV = r"[\"']?/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme[0-9]|mmc|disk/|mapper/|dm-[0-9]|md[0-9])"
_HOMEISH = r"[\"']?(?:/|~|\$\{?home\b)"

_B: list[tuple] = [
    # name, kind, verdict, severity, action, category, description, signals
    ("privesc-setuid", K.SECURITY_ACTION, "block", "high", "", "privilege_escalation",
     "setuid to root (privilege escalation)", [r"^setuid-root(?:\s|$)"]),
    ("process-injection", K.SECURITY_ACTION, "block", "high", "", "privilege_escalation",
     "ptrace of another process (process injection)", [r"^ptrace(?:\s|$)"]),
    ("bind-listener", K.SECURITY_ACTION, "escalate", "medium", "", "privilege_escalation",
     "listening port opened (possible backdoor)", [r"^bind(?:\s|$)"]),
    ("pipe-to-shell", K.TOOL_EXEC, "block", "high", "deny-exec", "command_danger",
     "downloaded content piped into a shell or interpreter", [
         (r"(?i)\b(?:curl|wget|fetch|socat|aria2c)\b.*" + _PIPE_INTO, _downloader_then_exec),
         r"(?i)(?:^|[\s;&|(])(?:" + _INTERPRETER[1:-1] + r"|source|\.)\s+(?:-\S+\s+)*[\"']?(?:<\(|\$\()\s*"
         r"(?:curl|wget|fetch|aria2c)\b",
     ]),
    ("reverse-shell", K.TOOL_EXEC, "block", "critical", "deny-exec", "command_danger",
     "interactive shell wired to a network socket (reverse shell)", [
         r"(?i)(?:>&|&>)\s*/dev/(?:tcp|udp)/",
         r"(?i)/dev/(?:tcp|udp)/\S*\s+0>&1",
         r"(?i)\b" + _SHELL + r"\s+-i\b.*/dev/(?:tcp|udp)/|/dev/(?:tcp|udp)/.*\b" + _SHELL + r"\s+-i\b",
         r"(?i)\b" + _SHELL + r"\b[^;&|\n]*<&\s*[0-9]+[^;&|\n]*>&\s*[0-9]+",
         r"(?i)\b" + _SHELL + r"\s+-i\b.*\|\s*(?:nc|ncat|netcat|socat|telnet|openssl)\b",
         r"(?i)\b(?:nc|ncat|netcat|telnet|openssl\s+s_client)\b.*\|\s*(?:\S*/)?" + _SHELL + r"\b",
         r"(?i)\b(?:nc|ncat|netcat)(?:\.\w+)?\s(?:[^;&|\n]*\s)?(?-i:-[a-z]*e|-c|--exec|--sh-exec|--lua-exec)(?:\s|=|$)",
         r"(?i)\bmkfifo\b.*\|\s*(?:\S*/)?" + _SHELL + r"\b",
         r"(?i)\bsocat\b.*\b(?:exec|system):",
         r"(?i)\bpty\.spawn\s*\(|\bsocket\b.*\bdup2\s*\(",
         r"(?i)\bperl\b.*(?:\buse\s+socket\b|-m(?:io::)?socket\b|\bio::socket\b|\bsocket\s*\()",
         r"(?i)\bruby\b.*\btcpsocket\b|\bphp\b.*\bfsockopen\s*\(|\bnet\.sockets\.tcpclient\b|/inet/tcp/",
     ]),
    ("destructive-rm", K.TOOL_EXEC, "block", "high", "", "command_danger",
     "destructive delete of the root, a home or a system directory", [
         (r"(?i)(?:^|[\s;&|(`\"'])rm\s(?:[^;&|\n]*\s)?(?:--\s+)?" + _HOMEISH, _destructive_rm),
         r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:|[\w:]+\(\)\s*\{\s*[\w:]+\s*\|\s*[\w:]+\s*&\s*\}\s*;\s*[\w:]+",
         (r"(?i)(?:^|[\s;&|(`\"'])find\s+(?:-[hlp]\s+)*" + _HOMEISH + r"[^;&|\n]*\s(?:-delete\b|-exec\s+rm\s)",
          _destructive_find),
     ]),
    ("disk-overwrite", K.TOOL_EXEC, "block", "critical", "", "command_danger",
     "raw overwrite of a block device (disk wipe)", [
         r"(?i)\bdd\b[^;&|\n]*\bof=" + _BLOCK_DEV,
         r"(?i)\b(?:mkfs(?:\.\w+)?|mke2fs|mkswap|wipefs|blkdiscard|shred)\b[^;&|\n]*\s" + _BLOCK_DEV,
         r"(?i)>\s*" + _BLOCK_DEV + r"|\btee\s+(?:-\S+\s+)*" + _BLOCK_DEV,
     ]),
    ("rce-primitive", K.TOOL_EXEC, "escalate", "medium", "", "communication_risk",
     "remote code execution or exfiltration building block (rce)", [
         r"(?i)/dev/(?:tcp|udp)/|\bbase64\b[^|;&\n]*\s(?:-[a-z]*d[a-z]*|--decode)\b|\bb64decode\b|frombase64string"
         r"|\bmkfifo\b|/proc/(?:self|thread-self|[0-9]+)/environ|/var/run/secrets/|/run/secrets/kubernetes\.io/",
         (r"(?i)" + _PIPE_INTO, _pipe_executes),
         (r"(?i)(?:^|[\s;&|(`\"'])eval\s", _eval_payload),
     ]),
    ("read-credentials", K.FILE_ACCESS, "escalate", "high", "deny-file", "data_leak",
     "read of a credential or secret file", [
         r"/etc/g?shadow-?$|/etc/sudoers(?:$|\.d/)|/etc/passwd-?$|/etc/ssh/ssh_host_[A-Za-z0-9]+_key$"
         r"|(?:^|/)\.ssh/id_[A-Za-z0-9_-]+$|(?:^|/)\.aws/(?:credentials|sso/cache/)|(?:^|/)\.kube/config$"
         r"|/etc/kubernetes/admin\.conf$|(?:^|/)\.git-credentials$|(?:^|/)\.netrc$|(?:^|/)\.npmrc$"
         r"|(?:^|/)\.pypirc$|(?:^|/)\.docker/config\.json$|/proc/(?:self|thread-self|[0-9]+)/environ$"
         r"|/run/secrets/|(?:^|/)\.(?:bash|zsh|sh|ksh|ash|mysql|psql|python|node_repl|rediscli|sqlite)_history$"
         r"|(?:^|/)\.history$|/fish_history$|(?:^|/)\.gnupg/"
         r"|(?:^|/)\.env(?:\.(?:local|dev|development|prod|production|stage|staging|test|testing|ci|docker|live"
         r"|secret|secrets)(?:\.local)?)?$"
         r"|(?:^|/)\.config/gcloud/(?:credentials\.db|access_tokens\.db|application_default_credentials\.json"
         r"|legacy_credentials/)|(?:^|/)\.azure/|(?:^|/)\.vault-token$|(?:^|/)\.terraform\.d/credentials\.tfrc\.json$"
         r"|(?:^|/)\.config/gh/hosts\.yml$",
     ]),
    ("secret-in-egress", K.SSL_CONTENT, "escalate", "high", "", "secret_exfil",
     "secret or private key in outbound content", [
         r"(?i)-----BEGIN (?:RSA |OPENSSH |EC |DSA |PGP |ENCRYPTED |ED25519 )?PRIVATE KEY(?: BLOCK)?-----",
         (_ASSIGNMENT, _secret_value),
         (_BEARER, _secret_value),
         (_TOKEN_SHAPES, _secret_value),
     ]),
    ("prompt-injection", K.SSL_CONTENT, "escalate", "medium", "", "prompt_injection",
     "prompt injection / jailbreak phrase in model traffic", [
         r"(?i)\bignore\s+(?:(?:all|the|your|any|of|my|these|those)\s+)*(?:previous|prior|above|earlier|preceding)"
         r"\s+(?:instructions|prompts?|directions|directives|rules)\b"
         r"|\bdisregard\s+(?:(?:all|any|the|your|previous|prior)\s+)*(?:system\s+)?(?:prompt|instructions)\b"
         r"|\byou\s+are\s+now\s+(?:in\s+)?(?:developer|dan|jailbreak|jailbroken|unrestricted|god)\s+mode\b"
         r"|\byou\s+are\s+now\s+(?:dan|jailbroken)\b"
         r"|\breveal\s+(?:(?:your|the|its)\s+)?(?:system|hidden|initial|original)\s+(?:prompt|instructions)\b",
     ]),
    ("cloud-metadata", K.EGRESS, "block", "high", "deny-egress", "systemic_risk",
     "cloud instance metadata access (SSRF)", [
         r"^(?:169\.254\.169\.254|169\.254\.170\.2|100\.100\.100\.200|\[?(?i:fd00:ec2::254)\]?"
         r"|\[?::ffff:169\.254\.169\.254\]?|(?i:metadata\.google\.internal|metadata\.azure\.com"
         r"|instance-data(?:\.ec2\.internal)?)\.?):",
     ]),
    ("oob-exfil-dns", K.DNS, "block", "high", "", "communication_risk",
     "DNS lookup of an out-of-band callback service (exfiltration)", [
         r"(?i)(?:^|\.)oast\.|(?:^|\.)oastify\.com|interactsh|(?:^|\.)interact\.sh\.?$|burpcollaborator"
         r"|(?:^|\.)dnslog\.|requestbin|pipedream\.net|(?:^|\.)ceye\.io\.?$|canarytokens\.com",
     ]),
    ("suspicious-dns", K.DNS, "escalate", "medium", "", "systemic_risk",
     "DNS lookup of a cloud metadata host (SSRF)", [
         r"(?i)(?:^|\.)metadata\.google\.internal\.?$|(?:^|\.)metadata\.azure\.com\.?$"
         r"|(?:^|\.)instance-data(?:\.ec2\.internal)?\.?$",
     ]),
]


def _signal(spec) -> Signal:
    return Signal(spec[0], spec[1]) if isinstance(spec, tuple) else Signal(spec)


BUILTIN_RULES: tuple[Rule, ...] = tuple(
    Rule(name=name, on=kind, pattern="|".join(f"(?:{_signal(s).pattern})" for s in signals), verdict=verdict,
         severity=severity, description=description, action=action, category=category, builtin=True,
         signals=tuple(_signal(s) for s in signals))
    for name, kind, verdict, severity, action, category, description, signals in _B
)
BUILTIN_NAMES = tuple(rule.name for rule in BUILTIN_RULES)
del _B

# a signal's pattern must compile on its own (the engine adds each one to an RE2 set)
for _rule in BUILTIN_RULES:
    for _s in _rule.signals:
        re2_compile(_s.pattern)

INCOMPLETE_EVIDENCE = Rule(
    name="incomplete-evidence", on=K.TOOL_EXEC, pattern="", verdict="escalate", severity="medium",
    description="incomplete ToolExec evidence: argv was truncated or could not be fully reassembled",
    category="command_danger", builtin=True,
)


# ---------------------------------------------------------------------------------------------
# custom (policy) rules, §11.1

_ON_ALIASES = {k.lower(): k for k in K.JUDGED_KINDS}


def _text(value: object) -> str:
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _choice(value: object, allowed: tuple[str, ...], default: str) -> str:
    text = _text(value).strip().lower()
    return text if text in allowed else default


def _on(value: object) -> str:
    text = _text(value).strip()
    if text == ANY_KIND:
        return ANY_KIND
    kind = _ON_ALIASES.get(text.lower()) or K.canonical_kind(text)
    return kind if kind in K.JUDGED_KINDS else K.TOOL_EXEC


def sanitize_rule(raw: object) -> dict | None:
    """Coerce one policy rule to its §11.1 shape; None when it has no pattern (the rule is dropped).

    The pattern is kept verbatim, never cut: a truncated regex could match far more than intended.
    Length and syntax are enforced by `compile_rules`."""
    if not isinstance(raw, dict):
        return None
    match = raw.get("match")
    match = match if isinstance(match, str) else _text(match)
    if not match:
        return None
    name = _text(raw.get("name")).strip()[:NAME_LIMIT] or "rule"
    reason = raw.get("reason")
    if reason is None or (isinstance(reason, str) and not reason.strip()):
        reason = raw.get("description")
    reason = _text(reason).strip()[:REASON_LIMIT] or "custom rule"
    return {
        "name": name,
        "on": _on(raw.get("on")),
        "match": match,
        "verdict": _choice(raw.get("verdict"), RULE_VERDICTS, "block"),
        "severity": _choice(raw.get("severity"), RULE_SEVERITIES, "medium"),
        "reason": reason,
        "action": _choice(raw.get("action"), RULE_ACTIONS, ""),
    }


def compile_rules(raw_rules: object) -> list[Rule]:
    """Policy rules → `Rule`s (sanitised, ≤ 200), each pattern validated with RE2.

    Raises `PolicyError('rule "<name>": invalid regex: <RE2 message>')` for the first bad rule."""
    rules: list[Rule] = []
    if not isinstance(raw_rules, (list, tuple)):
        return rules
    for raw in raw_rules:
        if len(rules) >= RULE_LIMIT:
            break
        spec = sanitize_rule(raw)
        if spec is None:
            continue
        name, match = spec["name"], spec["match"]
        if len(match) > MATCH_LIMIT:
            raise PolicyError(f'rule "{name}": match is longer than {MATCH_LIMIT} characters')
        try:
            re2_compile(match)
        except re2.error as exc:
            raise PolicyError(f'rule "{name}": invalid regex: {re2_error_text(exc)}') from None
        rules.append(Rule(name=name, on=spec["on"], pattern=match, verdict=spec["verdict"],
                          severity=spec["severity"], description=spec["reason"], action=spec["action"],
                          signals=(Signal(match),)))
    return rules
