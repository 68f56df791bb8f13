/*
 * fastdispatch/_pycompat.h: dictionary look-ups that hand back a strong
 * reference on every CPython the project supports. On free-threaded builds a
 * borrowed reference from a dict can die under the caller, so 3.13+ uses the
 * *Ref variants; older (GIL-only) versions borrow and take a reference at once.
 */
#ifndef FASTDISPATCH_PYCOMPAT_H
#define FASTDISPATCH_PYCOMPAT_H

#include <Python.h>

/* 1 and *result set: found; 0: missing; -1: error set (e.g. unhashable key). */
static inline int fd_dict_get_ref(PyObject *d, PyObject *key, PyObject **result) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_GetItemRef(d, key, result);
#else
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v != NULL) {
        Py_INCREF(v);
        *result = v;
        return 1;
    }
    *result = NULL;
    return PyErr_Occurred() ? -1 : 0;
#endif
}

/* 0: dflt inserted; 1: an existing value was there; -1: error. *result is a
 * strong reference to the value now in the dict (NULL on error). */
static inline int fd_dict_setdefault_ref(PyObject *d, PyObject *key, PyObject *dflt,
                                         PyObject **result) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_SetDefaultRef(d, key, dflt, result);
#else
    PyObject *v = PyDict_SetDefault(d, key, dflt);
    if (v == NULL) {
        *result = NULL;
        return -1;
    }
    Py_INCREF(v);
    *result = v;
    return v == dflt ? 0 : 1;
#endif
}

/* Take the exception that is set (there must be one) as a normalised
 * instance with its traceback attached; a new reference. */
static inline PyObject *fd_take_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* handler(arg) through vectorcall; NULL with an exception set on error. */
static inline PyObject *fd_call1(PyObject *callable, PyObject *arg) {
    PyObject *args[2] = {NULL, arg};
    return PyObject_Vectorcall(callable, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

#endif /* FASTDISPATCH_PYCOMPAT_H */
