// Reads the options that python/pronghorn/config.py's table passes to the
// engine (_core.Server) and to the supervisor (_core.supervise) as one dict.
//
// An option is named once in Python (the OPTIONS table, with where it goes)
// and read once here, by name, into the C++ field it sets: there is no
// positional format string to keep in step with a keyword list. A key that
// nothing reads is an error, so a misspelt or unplumbed option cannot be
// dropped silently.
//
// Error convention: the getters leave `out` unchanged when the key is absent
// or None, and record the first type error; finish() raises it (TypeError),
// or a TypeError naming keys no getter asked for. After an error the getters
// do nothing, so a caller reads every option and checks once.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pronghorn::bridge {

class OptionReader {
 public:
  // `options` is borrowed and must outlive the reader; anything but a dict
  // (or None: no options) is an error at finish().
  OptionReader(PyObject *options, const char *what);

  void flag(const char *key, bool &out);
  void number(const char *key, double &out);
  // Seconds given as a float, stored as milliseconds.
  void milliseconds(const char *key, uint64_t &out);
  void integer(const char *key, long long &out);
  void count(const char *key, uint64_t &out);  // an integer >= 0
  void text(const char *key, std::string &out);
  void text_list(const char *key, std::vector<std::string> &out);
  // A file name (str, in the file system's encoding) or bytes as they are.
  void path(const char *key, std::string &out);
  // The value itself (borrowed), or nullptr when absent or None.
  PyObject *object(const char *key);

  // True if every key was read and had the right type; else a TypeError is set.
  bool finish();

 private:
  PyObject *lookup(const char *key);  // borrowed; nullptr when absent, None, or after an error
  void fail(const char *key, const char *expected);

  PyObject *options_;
  const char *what_;
  std::vector<std::string> read_;
  std::string error_;
};

}  // namespace pronghorn::bridge
