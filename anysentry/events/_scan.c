/* find_marker(text, markers): for ASCII `text`, whether it holds any of `markers` (lowercase ASCII
 * words) in any letter case — `any(m in text.lower() for m in markers)` in one pass without the
 * lowered copy; None for text that is not ASCII, whose lowercasing the caller leaves to Python (the
 * Kelvin sign lowers to a `k`, `İ` to two characters).
 *
 * Every observer line is scanned for the §5.1 marker words before it may skip redaction: seven
 * substring searches over a lowered copy took ~0.75 µs a line, this ~0.25. setup.py builds it when
 * it finds a C compiler; redact.py scans in Python when it is not built. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_MARKERS 32
#define MAX_MARKER_LEN 64

static PyObject *find_marker(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "find_marker(text: str, markers: tuple[str, ...])");
        return NULL;
    }
    PyObject *text = args[0], *markers = args[1];
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    Py_ssize_t count = PyTuple_GET_SIZE(markers);
    if (count > MAX_MARKERS) {
        PyErr_SetString(PyExc_ValueError, "find_marker() takes at most 32 markers");
        return NULL;
    }
    const char *words[MAX_MARKERS];
    Py_ssize_t lengths[MAX_MARKERS];
    uint32_t starting[128] = {0}; /* per character, the markers that start with it in either case */
    for (Py_ssize_t m = 0; m < count; m++) {
        PyObject *marker = PyTuple_GET_ITEM(markers, m);
        if (!PyUnicode_Check(marker) || !PyUnicode_IS_ASCII(marker) || PyUnicode_GET_LENGTH(marker) == 0 ||
            PyUnicode_GET_LENGTH(marker) > MAX_MARKER_LEN) {
            PyErr_SetString(PyExc_ValueError, "find_marker() markers are non-empty ASCII words of at most 64 characters");
            return NULL;
        }
        words[m] = (const char *)PyUnicode_1BYTE_DATA(marker);
        lengths[m] = PyUnicode_GET_LENGTH(marker);
        for (Py_ssize_t k = 0; k < lengths[m]; k++) {
            if (words[m][k] >= 'A' && words[m][k] <= 'Z') {
                PyErr_SetString(PyExc_ValueError, "find_marker() markers are lowercase");
                return NULL;
            }
        }
        unsigned char c = (unsigned char)words[m][0];
        starting[c] |= (uint32_t)1 << m;
        if (c >= 'a' && c <= 'z')
            starting[c - ('a' - 'A')] |= (uint32_t)1 << m;
    }
    const unsigned char *data = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < size; i++) {
        for (uint32_t candidates = starting[data[i]]; candidates; candidates &= candidates - 1) {
            int m = __builtin_ctz(candidates);
            Py_ssize_t length = lengths[m];
            if (length > size - i)
                continue;
            Py_ssize_t k = 1;
            for (; k < length; k++) {
                unsigned char d = data[i + k];
                if (d >= 'A' && d <= 'Z')
                    d += 'a' - 'A';
                if (d != (unsigned char)words[m][k])
                    break;
            }
            if (k == length)
                Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"find_marker", (PyCFunction)(void (*)(void))find_marker, METH_FASTCALL,
     "find_marker(text, markers) -> whether ASCII text holds a marker in any case; None when not ASCII"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "anysentry.events._scan",
                                    "Case-blind marker scan of ASCII text in one pass.", -1, methods};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
