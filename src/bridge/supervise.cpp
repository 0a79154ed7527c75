// Python entry points of the supervisor and of socket binding in the parent.
#include "bridge/bridge.h"
#include "engine/net/listener.h"
#include "supervisor/supervisor.h"
#include "supervisor/systemd.h"

namespace pronghorn::bridge {

namespace {

void before_fork() {
  PyOS_BeforeFork();
}
void after_fork_parent() {
  PyOS_AfterFork_Parent();
}
void after_fork_child() {
  PyOS_AfterFork_Child();
}

bool string_list(PyObject *list, std::vector<std::string> &out) {
  if (list == nullptr || list == Py_None) return true;
  PyObject *seq = PySequence_Fast(list, "expected a list of strings");
  if (seq == nullptr) return false;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
    const char *item = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
    if (item == nullptr) {
      Py_DECREF(seq);
      return false;
    }
    out.emplace_back(item);
  }
  Py_DECREF(seq);
  return true;
}

}  // namespace

// supervise(workers, ...) -> int in the parent (its exit code, once every
// worker is gone), or (control_fd, max_requests) in a forked worker.
PyObject *py_supervise(PyObject *, PyObject *args, PyObject *kwargs) {
  static const char *kwlist[] = {"workers",
                                 "timeout_worker_healthcheck",
                                 "timeout_graceful_shutdown",
                                 "limit_max_requests",
                                 "limit_max_requests_jitter",
                                 "limit_worker_memory",
                                 "worker_lifetime",
                                 "pid_file",
                                 "reload",
                                 "reload_dirs",
                                 "reload_includes",
                                 "reload_excludes",
                                 "reload_delay",
                                 "reuse_port",
                                 "host",
                                 "port",
                                 "backlog",
                                 "listen_fd",
                                 "pre_start",
                                 "ready_message",
                                 nullptr};
  supervisor::Options options;
  unsigned long long max_requests = 0, jitter = 0, memory = 0;
  const char *pid_file = "";
  int reload = 0, reuse_port = 0;
  const char *host = "", *ready_message = "";
  PyObject *dirs = nullptr, *includes = nullptr, *excludes = nullptr, *pre_start = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|$ddKKKdspOOOdpsiiiOs", const_cast<char **>(kwlist), &options.workers,
                                   &options.healthcheck_timeout_s, &options.graceful_timeout_s, &max_requests, &jitter,
                                   &memory, &options.worker_lifetime_s, &pid_file, &reload, &dirs, &includes, &excludes,
                                   &options.reload_delay_s, &reuse_port, &host, &options.port, &options.backlog,
                                   &options.first_listen_fd, &pre_start, &ready_message))
    return nullptr;
  options.reuse_port = reuse_port;
  options.host = host;
  options.reload = reload;
  if (!string_list(dirs, options.reload_dirs) || !string_list(includes, options.reload_includes) ||
      !string_list(excludes, options.reload_excludes) || !string_list(pre_start, options.pre_start))
    return nullptr;
  options.max_requests = max_requests;
  options.max_requests_jitter = jitter;
  options.max_memory_mib = memory;
  options.pid_file = pid_file;
  options.ready_message = ready_message;
  supervisor::ForkHooks hooks{before_fork, after_fork_parent, after_fork_child};
  supervisor::Outcome outcome = supervisor::supervise(options, hooks);
  if (outcome.role == supervisor::Role::Parent) return PyLong_FromLong(outcome.exit_code);
  return Py_BuildValue("(iKi)", outcome.control_fd, static_cast<unsigned long long>(outcome.max_requests),
                       outcome.listen_fd);
}

// bind_tcp(host, port, backlog, reuse_port) -> (fd, bound_host, bound_port)
PyObject *py_bind_tcp(PyObject *, PyObject *args) {
  const char *host;
  int port, backlog, reuse_port = 0;
  if (!PyArg_ParseTuple(args, "sii|p", &host, &port, &backlog, &reuse_port)) return nullptr;
  int fd = listen_tcp(host, port, backlog, reuse_port);
  if (fd < 0) {
    PyErr_SetString(PyExc_OSError, "cannot listen (see the log for the reason)");
    return nullptr;
  }
  SocketAddress addr = local_address(fd);
  return Py_BuildValue("(isi)", fd, addr.host.c_str(), addr.port);
}

PyObject *py_bind_unix(PyObject *, PyObject *args) {
  const char *path;
  int backlog;
  if (!PyArg_ParseTuple(args, "si", &path, &backlog)) return nullptr;
  int fd = listen_unix(path, backlog);
  if (fd < 0) {
    PyErr_SetString(PyExc_OSError, "cannot listen (see the log for the reason)");
    return nullptr;
  }
  return PyLong_FromLong(fd);
}

}  // namespace pronghorn::bridge

namespace pronghorn::bridge {

PyObject *py_sd_notify(PyObject *, PyObject *arg) {
  Py_ssize_t len = 0;
  const char *state = PyUnicode_AsUTF8AndSize(arg, &len);
  if (state == nullptr) return nullptr;
  return PyBool_FromLong(supervisor::sd_notify(std::string_view(state, static_cast<size_t>(len))));
}

}  // namespace pronghorn::bridge
