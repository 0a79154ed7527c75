#include "bridge/options.h"

#include <algorithm>
#include <cmath>

namespace pronghorn::bridge {

OptionReader::OptionReader(PyObject *options, const char *what) : options_(options), what_(what) {
  if (options_ != Py_None && !PyDict_Check(options_)) error_ = std::string(what_) + " options must be a dict";
}

PyObject *OptionReader::lookup(const char *key) {
  read_.emplace_back(key);
  if (!error_.empty() || options_ == Py_None) return nullptr;
  PyObject *value = PyDict_GetItemString(options_, key);
  return value == Py_None ? nullptr : value;
}

void OptionReader::fail(const char *key, const char *expected) {
  if (error_.empty()) error_ = std::string(what_) + " option '" + key + "' must be " + expected;
}

void OptionReader::flag(const char *key, bool &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  int truth = PyObject_IsTrue(value);
  if (truth < 0) {
    PyErr_Clear();
    return fail(key, "true or false");
  }
  out = truth != 0;
}

void OptionReader::number(const char *key, double &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  if (!PyFloat_Check(value) && !PyLong_Check(value)) return fail(key, "a number");
  double d = PyFloat_AsDouble(value);
  if (d == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return fail(key, "a number");
  }
  out = d;
}

void OptionReader::milliseconds(const char *key, uint64_t &out) {
  double seconds = std::nan("");
  number(key, seconds);
  if (std::isnan(seconds)) return;  // absent, None, or an error already recorded
  if (!(seconds >= 0 && seconds < 1e12)) return fail(key, "a number of seconds >= 0");
  out = static_cast<uint64_t>(seconds * 1000);
}

void OptionReader::integer(const char *key, long long &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  if (!PyLong_Check(value)) return fail(key, "an integer");
  long long n = PyLong_AsLongLong(value);
  if (n == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return fail(key, "an integer in range");
  }
  out = n;
}

void OptionReader::count(const char *key, uint64_t &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  unsigned long long n = PyLong_Check(value) ? PyLong_AsUnsignedLongLong(value) : static_cast<unsigned long long>(-1);
  if (n == static_cast<unsigned long long>(-1)) {
    PyErr_Clear();
    return fail(key, "an integer >= 0");
  }
  out = n;
}

void OptionReader::text(const char *key, std::string &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  Py_ssize_t len = 0;
  const char *utf8 = PyUnicode_Check(value) ? PyUnicode_AsUTF8AndSize(value, &len) : nullptr;
  if (utf8 == nullptr) {
    PyErr_Clear();
    return fail(key, "a str");
  }
  out.assign(utf8, static_cast<size_t>(len));
}

void OptionReader::text_list(const char *key, std::vector<std::string> &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  if (!PyList_Check(value) && !PyTuple_Check(value)) return fail(key, "a list of str");
  std::vector<std::string> items;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(value); ++i) {
    Py_ssize_t len = 0;
    PyObject *item = PySequence_Fast_GET_ITEM(value, i);
    const char *utf8 = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : nullptr;
    if (utf8 == nullptr) {
      PyErr_Clear();
      return fail(key, "a list of str");
    }
    items.emplace_back(utf8, static_cast<size_t>(len));
  }
  out = std::move(items);
}

void OptionReader::path(const char *key, std::string &out) {
  PyObject *value = lookup(key);
  if (value == nullptr) return;
  if (PyBytes_Check(value)) {
    out.assign(PyBytes_AS_STRING(value), static_cast<size_t>(PyBytes_GET_SIZE(value)));
    return;
  }
  PyObject *encoded = PyUnicode_Check(value) ? PyUnicode_EncodeFSDefault(value) : nullptr;
  if (encoded == nullptr) {
    PyErr_Clear();
    return fail(key, "a str or bytes");
  }
  out.assign(PyBytes_AS_STRING(encoded), static_cast<size_t>(PyBytes_GET_SIZE(encoded)));
  Py_DECREF(encoded);
}

PyObject *OptionReader::object(const char *key) {
  return lookup(key);
}

bool OptionReader::finish() {
  if (error_.empty() && options_ != Py_None) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(options_, &pos, &key, &value)) {
      const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : nullptr;
      if (name == nullptr) {
        PyErr_Clear();
        error_ = std::string(what_) + " option names must be str";
        break;
      }
      if (std::find(read_.begin(), read_.end(), name) == read_.end()) {
        error_ = std::string("unknown ") + what_ + " option '" + name + "'";
        break;
      }
    }
  }
  if (error_.empty()) return true;
  PyErr_SetString(PyExc_TypeError, error_.c_str());
  return false;
}

}  // namespace pronghorn::bridge
