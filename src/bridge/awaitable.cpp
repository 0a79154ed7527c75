// A C-level awaitable for results that are already there: `await receive()`
// and `await send()` finish in the same step, with no asyncio Future, no
// call_soon and no extra trip through the event loop. Only a real wait (body
// not arrived yet, socket buffer full) returns a Future instead.
#include "bridge/bridge.h"

namespace pronghorn::bridge {

namespace {

struct ReadyObject {
  PyObject_HEAD PyObject *value;  // nullptr once delivered
};

// Free list: one ready object per send()/receive() call is the hot path.
constexpr int kFreeListMax = 64;
ReadyObject *free_list[kFreeListMax];
int free_count = 0;
ReadyObject *none_singleton = nullptr;

void ready_dealloc(PyObject *self) {
  auto *obj = reinterpret_cast<ReadyObject *>(self);
  Py_CLEAR(obj->value);
  if (free_count < kFreeListMax) {
    free_list[free_count++] = obj;
    return;
  }
  PyObject_Free(self);
}

PyObject *ready_await(PyObject *self) {
  Py_INCREF(self);
  return self;
}

// Raises StopIteration(value): the iterator protocol's way to return a value.
PyObject *ready_next(PyObject *self) {
  auto *obj = reinterpret_cast<ReadyObject *>(self);
  PyObject *value = obj->value;
  if (value == nullptr || value == Py_None) {
    PyErr_SetNone(PyExc_StopIteration);
    return nullptr;
  }
  obj->value = nullptr;
  // An instance, so that a tuple value is not unpacked into arguments.
  PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
  Py_DECREF(value);
  if (stop == nullptr) return nullptr;
  PyErr_SetObject(PyExc_StopIteration, stop);
  Py_DECREF(stop);
  return nullptr;
}

// am_send: CPython's SEND takes this path and gets the value with no exception.
PySendResult ready_send(PyObject *self, PyObject *, PyObject **result) {
  auto *obj = reinterpret_cast<ReadyObject *>(self);
  if (obj->value == nullptr) {
    Py_INCREF(Py_None);
    *result = Py_None;
  } else if (self == reinterpret_cast<PyObject *>(none_singleton)) {
    Py_INCREF(Py_None);
    *result = Py_None;
  } else {
    *result = obj->value;  // ownership moves to the caller
    obj->value = nullptr;
  }
  return PYGEN_RETURN;
}

PyObject *ready_send_method(PyObject *self, PyObject *arg) {
  PyObject *result = nullptr;
  ready_send(self, arg, &result);
  PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
  Py_DECREF(result);
  if (stop != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return nullptr;
}

PyObject *ready_throw(PyObject *, PyObject *args) {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  if (!PyArg_ParseTuple(args, "O|OO", &type, &value, &tb)) return nullptr;
  if (PyExceptionInstance_Check(type)) {
    PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(type)), type);
  } else {
    PyErr_SetObject(type, value);
  }
  return nullptr;
}

PyObject *ready_close(PyObject *, PyObject *) {
  Py_RETURN_NONE;
}

PyMethodDef ready_methods[] = {
    {"send", ready_send_method, METH_O, nullptr},
    {"throw", ready_throw, METH_VARARGS, nullptr},
    {"close", ready_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyAsyncMethods ready_async = {ready_await, nullptr, nullptr, ready_send};

}  // namespace

PyTypeObject ReadyType{};

void fill_ready_type() {
  // Filled at run time: C++ has no designated initializers for all of PyTypeObject's fields.
  ReadyType.ob_base.ob_base.ob_refcnt = 1;
  ReadyType.tp_name = "pronghorn._core.Ready";
  ReadyType.tp_basicsize = sizeof(ReadyObject);
  ReadyType.tp_dealloc = ready_dealloc;
  ReadyType.tp_as_async = &ready_async;
  ReadyType.tp_flags = Py_TPFLAGS_DEFAULT;
  ReadyType.tp_doc = "An awaitable whose result is already known.";
  ReadyType.tp_iter = ready_await;
  ReadyType.tp_iternext = ready_next;
  ReadyType.tp_methods = ready_methods;
}

PyObject *ready(PyObject *value) {
  ReadyObject *obj;
  if (free_count > 0) {
    obj = free_list[--free_count];
    _Py_NewReference(reinterpret_cast<PyObject *>(obj));
  } else {
    obj = PyObject_New(ReadyObject, &ReadyType);
    if (obj == nullptr) {
      Py_XDECREF(value);
      return nullptr;
    }
  }
  obj->value = value;
  return reinterpret_cast<PyObject *>(obj);
}

PyObject *ready_none() {
  // Stateless when the result is None: one shared object serves every call.
  if (none_singleton == nullptr) {
    none_singleton = PyObject_New(ReadyObject, &ReadyType);
    if (none_singleton == nullptr) return nullptr;
    none_singleton->value = nullptr;
  }
  Py_INCREF(none_singleton);
  return reinterpret_cast<PyObject *>(none_singleton);
}

PyObject *message_type(PyObject *message, PyObject *missing) {
  if (!PyDict_Check(message)) {
    PyErr_SetString(PyExc_TypeError, "ASGI messages must be dicts.");
    return nullptr;
  }
  PyObject *type = PyDict_GetItemWithError(message, names.type);
  if (type == nullptr) {
    if (PyErr_Occurred()) return nullptr;
    if (missing == PyExc_KeyError)
      PyErr_SetString(PyExc_KeyError, "type");
    else
      PyErr_SetString(missing, "ASGI message without 'type'.");
    return nullptr;
  }
  if (!PyUnicode_Check(type)) {
    PyErr_Format(PyExc_RuntimeError, "ASGI message 'type' must be a str, not %R.", type);
    return nullptr;
  }
  return type;
}

}  // namespace pronghorn::bridge
