// Python entry points of the supervisor and of socket binding in the parent.
#include "bridge/bridge.h"
#include "bridge/options.h"
#include "engine/net/listener.h"
#include "supervisor/supervisor.h"
#include "supervisor/systemd.h"

namespace pronghorn::bridge {

namespace {

// --metrics, in a worker: its slot in the supervisor's shared memory.
metrics::WorkerSlot *worker_slot = nullptr;

void before_fork() {
  PyOS_BeforeFork();
}
void after_fork_parent() {
  PyOS_AfterFork_Parent();
}
void after_fork_child() {
  PyOS_AfterFork_Child();
}

}  // namespace

metrics::WorkerSlot *worker_metrics_slot() {
  return worker_slot;
}

// supervise(options) -> int in the parent (its exit code, once every worker
// is gone), or (control_fd, max_requests, listen_fd) in a forked worker.
// `options` is the dict that server.py builds from config.py's OPTIONS table
// (the options marked for the supervisor, by their names) and the values it
// works out (the watched directories and patterns, the first socket, the
// ready message).
PyObject *py_supervise(PyObject *, PyObject *dict) {
  supervisor::Options options;
  OptionReader read(dict, "supervisor");
  long long workers = options.workers, port = options.port, backlog = options.backlog, listen_fd = -1;
  read.integer("workers", workers);
  read.number("timeout_worker_healthcheck", options.healthcheck_timeout_s);
  read.number("timeout_graceful_shutdown", options.graceful_timeout_s);
  read.count("limit_max_requests", options.max_requests);
  read.count("limit_max_requests_jitter", options.max_requests_jitter);
  read.count("limit_worker_memory", options.max_memory_mib);
  read.number("worker_lifetime", options.worker_lifetime_s);
  read.text("pid_file", options.pid_file);
  read.flag("reload", options.reload);
  read.text_list("reload_dirs", options.reload_dirs);
  read.text_list("reload_includes", options.reload_includes);
  read.text_list("reload_excludes", options.reload_excludes);
  read.number("reload_delay", options.reload_delay_s);
  read.flag("reuse_port", options.reuse_port);
  read.text("host", options.host);
  read.integer("port", port);
  read.integer("backlog", backlog);
  read.integer("listen_fd", listen_fd);
  read.text_list("pre_start", options.pre_start);
  read.text("ready_message", options.ready_message);
  long long metrics_port = options.metrics_port;
  read.flag("metrics", options.metrics);
  read.text("metrics_host", options.metrics_host);
  read.integer("metrics_port", metrics_port);
  if (!read.finish()) return nullptr;
  if (metrics_port < 0 || metrics_port > 65535) {
    PyErr_SetString(PyExc_ValueError, "supervisor: metrics_port out of range");
    return nullptr;
  }
  options.metrics_port = static_cast<int>(metrics_port);
  if (workers < 1 || port < 0 || port > 65535 || backlog < 1) {
    PyErr_SetString(PyExc_ValueError, "supervisor: workers, port or backlog out of range");
    return nullptr;
  }
  options.workers = static_cast<int>(workers);
  options.port = static_cast<int>(port);
  options.backlog = static_cast<int>(backlog);
  options.first_listen_fd = static_cast<int>(listen_fd);
  supervisor::ForkHooks hooks{before_fork, after_fork_parent, after_fork_child};
  supervisor::Outcome outcome = supervisor::supervise(options, hooks);
  if (outcome.role == supervisor::Role::Parent) return PyLong_FromLong(outcome.exit_code);
  worker_slot = outcome.metrics_slot;
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
