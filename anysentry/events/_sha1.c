/* sha1_hex(text, length=16): the first `length` hex digits of SHA-1 over `text` in UTF-8 (lone
 * surrogates passed through), as anysentry.events.ids.sha1_hex computes it with hashlib.
 *
 * Every event id is a SHA-1 (SPEC §4.1), three per observer line. hashlib spends ~0.4 µs per call
 * around OpenSSL's digest (a context object, the EVP dispatch, a hex string of 40 digits); calling
 * OpenSSL's SHA-1 directly on the string's UTF-8 buffer takes ~0.1 µs for a short id. setup.py builds
 * this when OpenSSL's headers are at hand; ids.py uses hashlib when it is not built. */

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA1_Init & co.: the direct path, no EVP lookup per call */
#include <Python.h>
#include <openssl/sha.h>

static const char HEX[] = "0123456789abcdef";

static PyObject *hex_prefix(const char *data, Py_ssize_t size, Py_ssize_t length) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA_CTX ctx;
    SHA1_Init(&ctx);
    SHA1_Update(&ctx, data, (size_t)size);
    SHA1_Final(digest, &ctx);
    PyObject *out = PyUnicode_New(length, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *hex = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < length; i++)
        hex[i] = HEX[(i & 1) ? digest[i / 2] & 15 : digest[i / 2] >> 4];
    return out;
}

static PyObject *sha1_hex(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t length = 16, size;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "sha1_hex(text, length=16) takes one or two arguments");
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "sha1_hex() needs a str, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (nargs == 2) {
        length = PyLong_AsSsize_t(args[1]);
        if (length == -1 && PyErr_Occurred())
            return NULL;
    }
    /* as hexdigest()[:length] */
    if (length < 0)
        length += 2 * SHA_DIGEST_LENGTH;
    length = length < 0 ? 0 : length > 2 * SHA_DIGEST_LENGTH ? 2 * SHA_DIGEST_LENGTH : length;
    const char *data = PyUnicode_AsUTF8AndSize(args[0], &size);
    if (data != NULL)
        return hex_prefix(data, size, length);
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return NULL;
    PyErr_Clear(); /* a lone surrogate: encode it as hashlib's caller does, "surrogatepass" */
    PyObject *encoded = PyUnicode_AsEncodedString(args[0], "utf-8", "surrogatepass");
    if (encoded == NULL)
        return NULL;
    PyObject *out = hex_prefix(PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded), length);
    Py_DECREF(encoded);
    return out;
}

static PyMethodDef methods[] = {
    {"sha1_hex", (PyCFunction)(void (*)(void))sha1_hex, METH_FASTCALL,
     "sha1_hex(text, length=16) -> the first `length` hex digits of SHA-1 over text (UTF-8, surrogatepass)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "anysentry.events._sha1",
                                    "SHA-1 hex prefixes for event ids, straight through OpenSSL.", -1, methods};

PyMODINIT_FUNC PyInit__sha1(void) { return PyModule_Create(&module); }
