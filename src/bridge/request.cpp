// One ASGI HTTP exchange: the `receive` and `send` callables handed to the
// application, and the engine's ExchangeObserver that wakes them.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <new>

#include "bridge/bridge.h"
#include "engine/log.h"

namespace pronghorn::bridge {

namespace {

struct RequestObject;

class Observer final : public http::ExchangeObserver {
 public:
  explicit Observer(RequestObject *owner) : owner_(owner) {}
  void on_body_ready() override;
  void on_writable() override;
  void on_detach(http::Detach why) override;

 private:
  RequestObject *owner_;
};

struct RequestObject {
  PyObject_HEAD Observer observer;
  AppServer *server;
  http::Exchange *conn;  // nullptr once the exchange let go of us
  // Futures of receive() calls waiting, oldest first: the first in
  // receive_waiter, any others in the list more_receive_waiters (several
  // tasks may wait at once, e.g. one watching for a disconnect while another
  // reads). Body messages go to the oldest; http.disconnect to all.
  PyObject *receive_waiter;
  PyObject *more_receive_waiters;  // list, or nullptr
  PyObject *send_waiter;           // pending Future of send(), or nullptr
  PyObject *unread_message;        // a message whose receive() was cancelled, or nullptr
  bool disconnected;               // the client went away before the response completed
  bool cut_by_stop;                // ... because a graceful stop ended the stream: send() raises
  bool response_started;
  bool response_complete;
  bool body_delivered;  // the last http.request message (more_body False) was returned
};

PyObject *disconnect_message() {
  return PyDict_Copy(names.disconnect_message);
}

// Builds the next http.request message from the connection's body buffer.
PyObject *body_message(RequestObject *self) {
  http::Exchange &conn = *self->conn;
  Buffer &buf = conn.body_buffer();
  PyObject *body = buf.empty() ? Py_NewRef(names.empty_bytes)
                               : PyBytes_FromStringAndSize(buf.data(), static_cast<Py_ssize_t>(buf.size()));
  if (body == nullptr) return nullptr;
  buf.consume(buf.size());
  bool more = !conn.body_complete();
  PyObject *message = PyDict_New();
  if (message == nullptr || PyDict_SetItem(message, names.type, names.http_request) < 0 ||
      PyDict_SetItem(message, names.body, body) < 0 ||
      PyDict_SetItem(message, names.more_body, more ? Py_True : Py_False) < 0) {
    Py_XDECREF(message);
    Py_DECREF(body);
    return nullptr;
  }
  Py_DECREF(body);
  if (!more) self->body_delivered = true;
  return message;
}

// The oldest receive() waiter, taken out of the queue (new reference), or nullptr.
PyObject *take_receive_waiter(RequestObject *self) {
  PyObject *first = self->receive_waiter;
  self->receive_waiter = nullptr;
  PyObject *more = self->more_receive_waiters;
  if (more != nullptr && PyList_GET_SIZE(more) > 0) {
    self->receive_waiter = Py_NewRef(PyList_GET_ITEM(more, 0));
    if (PyList_SetSlice(more, 0, 1, nullptr) < 0) PyErr_WriteUnraisable(more);
  }
  return first;
}

// Resolves a waiter Future unless the application cancelled it meanwhile.
// Returns false when the waiter was no longer pending.
bool resolve(PyObject *&waiter, PyObject *method, PyObject *value) {
  PyObject *future = waiter;
  waiter = nullptr;
  if (future == nullptr) return false;
  PyObject *done = PyObject_CallMethodNoArgs(future, names.done);
  bool pending = done == Py_False;
  Py_XDECREF(done);
  if (done == nullptr) PyErr_WriteUnraisable(future);
  if (pending) {
    PyObject *r = PyObject_CallMethodOneArg(future, method, value);
    if (r == nullptr) PyErr_WriteUnraisable(future);
    Py_XDECREF(r);
  }
  Py_DECREF(future);
  return pending;
}

void Observer::on_body_ready() {
  RequestObject *self = owner_;
  if (self->receive_waiter == nullptr || self->body_delivered || self->conn == nullptr) return;
  PyObject *message = body_message(self);
  if (message == nullptr) {
    PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
    return;
  }
  // To the oldest waiter that is still waiting.
  bool delivered = false;
  while (!delivered && self->receive_waiter != nullptr) {
    PyObject *waiter = take_receive_waiter(self);
    delivered = resolve(waiter, names.set_result, message);
  }
  if (!delivered) {
    // Every waiter was cancelled: the next receive() returns this message.
    Py_XSETREF(self->unread_message, message);
    return;
  }
  Py_DECREF(message);
  if (self->conn != nullptr) self->conn->body_taken();
}

void Observer::on_writable() {
  RequestObject *self = owner_;
  resolve(self->send_waiter, names.set_result, Py_None);
}

void Observer::on_detach(http::Detach why) {
  RequestObject *self = owner_;
  self->conn = nullptr;
  if (why != http::Detach::Complete && !self->response_complete) {
    self->disconnected = true;
    // A graceful stop cut the stream: the app is told by send() too.
    if (why == http::Detach::ServerStop) self->cut_by_stop = true;
  }
  // Every waiting receive() gets http.disconnect.
  while (self->receive_waiter != nullptr) {
    PyObject *waiter = take_receive_waiter(self);
    PyObject *message = disconnect_message();
    if (message != nullptr) {
      resolve(waiter, names.set_result, message);
      Py_DECREF(message);
    } else {
      Py_DECREF(waiter);
      PyErr_WriteUnraisable(nullptr);
    }
  }
  if (self->send_waiter != nullptr) {
    if (self->disconnected && (self->server->spec_2_4 || self->cut_by_stop)) {
      PyObject *text = PyUnicode_FromString("client disconnected");
      PyObject *exc = text == nullptr ? nullptr : PyObject_CallOneArg(names.client_disconnected, text);
      Py_XDECREF(text);
      if (exc != nullptr) {
        resolve(self->send_waiter, names.set_exception, exc);
        Py_DECREF(exc);
      } else {
        PyErr_WriteUnraisable(nullptr);
      }
    } else {
      resolve(self->send_waiter, names.set_result, Py_None);
    }
  }
  Py_DECREF(reinterpret_cast<PyObject *>(self));  // the connection's reference
}

PyObject *new_waiter(RequestObject *self, PyObject *&slot) {
  PyObject *future = PyObject_CallNoArgs(self->server->create_future);
  if (future == nullptr) return nullptr;
  Py_XSETREF(slot, Py_NewRef(future));
  return future;
}

PyObject *raise_disconnected() {
  PyErr_SetString(names.client_disconnected, "client disconnected");
  return nullptr;
}

// receive(): http.request messages until the body is complete, then
// http.disconnect once the response is complete or the client is gone.
PyObject *request_receive(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<RequestObject *>(op);
  // Waiters the app cancelled are dropped from the front of the queue.
  while (self->receive_waiter != nullptr) {
    PyObject *done = PyObject_CallMethodNoArgs(self->receive_waiter, names.done);
    if (done == nullptr) return nullptr;
    bool pending = done == Py_False;
    Py_DECREF(done);
    if (pending) break;
    Py_DECREF(take_receive_waiter(self));
  }
  if (self->receive_waiter != nullptr) {
    // Another receive() is waiting (uvicorn allows this): this one waits
    // behind it, for the next body message or for http.disconnect.
    if (self->conn == nullptr) return ready(disconnect_message());
    if (self->more_receive_waiters == nullptr && (self->more_receive_waiters = PyList_New(0)) == nullptr)
      return nullptr;
    // Waiters cancelled meanwhile leave the queue here, so that a poll such
    // as Starlette's is_disconnected() (a receive() cancelled at once, on
    // every event of a stream) does not pile them up.
    PyObject *more = self->more_receive_waiters;
    for (Py_ssize_t i = PyList_GET_SIZE(more) - 1; i >= 0; --i) {
      PyObject *done = PyObject_CallMethodNoArgs(PyList_GET_ITEM(more, i), names.done);
      if (done == nullptr) return nullptr;
      bool finished = done == Py_True;
      Py_DECREF(done);
      if (finished && PyList_SetSlice(more, i, i + 1, nullptr) < 0) return nullptr;
    }
    PyObject *future = PyObject_CallNoArgs(self->server->create_future);
    if (future == nullptr) return nullptr;
    if (PyList_Append(self->more_receive_waiters, future) < 0) {
      Py_DECREF(future);
      return nullptr;
    }
    return future;
  }
  if (self->unread_message != nullptr) {
    PyObject *message = self->unread_message;
    self->unread_message = nullptr;
    return ready(message);
  }
  if (self->conn == nullptr) return ready(disconnect_message());
  http::Exchange &conn = *self->conn;
  if (!self->body_delivered) {
    if (!conn.body_buffer().empty() || conn.body_complete()) {
      PyObject *message = body_message(self);
      if (message == nullptr) return nullptr;
      conn.body_taken();
      return ready(message);
    }
    // Wait for body bytes. The waiter is in place before body_taken(), which
    // may find bytes at once (or send 100 Continue and resume reading).
    PyObject *future = new_waiter(self, self->receive_waiter);
    if (future == nullptr) return nullptr;
    conn.body_taken();
    return future;
  }
  // Body fully delivered: the next message is http.disconnect, when it happens.
  return new_waiter(self, self->receive_waiter);
}

}  // namespace

// Fills `out` with views into the header bytes. `*keep` receives the sequence
// that owns them (a new list when `headers` is not a list or tuple): the caller
// releases it only after the views are used.
bool parse_headers(PyObject *headers, http::HeaderList &out, PyObject **keep) {
  *keep = nullptr;
  if (headers == nullptr || headers == Py_None) return true;
  PyObject *seq = PySequence_Fast(headers, "ASGI 'headers' must be an iterable of [name, value] pairs.");
  if (seq == nullptr) return false;
  *keep = seq;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  out.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *name = nullptr, *value = nullptr;
    if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
      name = PyTuple_GET_ITEM(pair, 0);
      value = PyTuple_GET_ITEM(pair, 1);
    } else if (PyList_Check(pair) && PyList_GET_SIZE(pair) == 2) {
      name = PyList_GET_ITEM(pair, 0);
      value = PyList_GET_ITEM(pair, 1);
    }
    if (name == nullptr || !PyBytes_Check(name) || !PyBytes_Check(value)) {
      PyErr_SetString(PyExc_RuntimeError, "ASGI response headers must be [name, value] pairs of bytes.");
      return false;
    }
    out.emplace_back(std::string_view(PyBytes_AS_STRING(name), static_cast<size_t>(PyBytes_GET_SIZE(name))),
                     std::string_view(PyBytes_AS_STRING(value), static_cast<size_t>(PyBytes_GET_SIZE(value))));
  }
  return true;
}

namespace {

PyObject *finish_write(RequestObject *self, http::WriteStatus status) {
  switch (status) {
    case http::WriteStatus::Ok: return ready_none();
    case http::WriteStatus::Blocked:
      if (self->conn == nullptr) return ready_none();
      return new_waiter(self, self->send_waiter);
    case http::WriteStatus::Closed:
      self->disconnected = true;
      if (!self->server->spec_2_4) return ready_none();
      return raise_disconnected();
    case http::WriteStatus::TooLong:
      PyErr_SetString(PyExc_RuntimeError, "Response content longer than Content-Length");
      return nullptr;
    case http::WriteStatus::TooShort:
      PyErr_SetString(PyExc_RuntimeError, "Response content shorter than Content-Length");
      return nullptr;
  }
  return ready_none();
}

PyObject *send_start(RequestObject *self, PyObject *message) {
  if (self->response_started) {
    PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.body', but got 'http.response.start'.");
    return nullptr;
  }
  if (self->conn == nullptr) return raise_disconnected();
  PyObject *status_obj = PyDict_GetItemWithError(message, names.status);
  if (status_obj == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ASGI 'http.response.start' message without 'status'.");
    return nullptr;
  }
  long status = PyLong_AsLong(status_obj);
  if (status == -1 && PyErr_Occurred()) return nullptr;
  http::HeaderList headers;
  PyObject *headers_obj = PyDict_GetItemWithError(message, names.headers);
  if (headers_obj == nullptr && PyErr_Occurred()) return nullptr;
  PyObject *keep = nullptr;
  bool parsed = parse_headers(headers_obj, headers, &keep);
  const char *error = parsed ? self->conn->start_response(static_cast<int>(status), headers) : nullptr;
  Py_XDECREF(keep);
  if (!parsed) return nullptr;
  if (error != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, error);
    return nullptr;
  }
  self->response_started = true;
  return ready_none();
}

PyObject *send_body(RequestObject *self, PyObject *message) {
  if (!self->response_started) {
    PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.start', but got 'http.response.body'.");
    return nullptr;
  }
  if (self->response_complete) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.body' sent, after response already completed.");
    return nullptr;
  }
  if (self->conn == nullptr) return raise_disconnected();
  PyObject *more_obj = PyDict_GetItemWithError(message, names.more_body);
  if (more_obj == nullptr && PyErr_Occurred()) return nullptr;
  int more = more_obj == nullptr ? 0 : PyObject_IsTrue(more_obj);
  if (more < 0) return nullptr;
  PyObject *body = PyDict_GetItemWithError(message, names.body);
  if (body == nullptr && PyErr_Occurred()) return nullptr;
  if (!more) self->response_complete = true;
  http::WriteStatus status;
  if (body == nullptr) {
    status = self->conn->write_body(nullptr, 0, more);
  } else if (PyBytes_Check(body)) {
    status = self->conn->write_body(PyBytes_AS_STRING(body), static_cast<size_t>(PyBytes_GET_SIZE(body)), more);
  } else {
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
      self->response_complete = false;
      return nullptr;
    }
    status = self->conn->write_body(static_cast<const char *>(view.buf), static_cast<size_t>(view.len), more);
    PyBuffer_Release(&view);
  }
  return finish_write(self, status);
}

PyObject *send_pathsend(RequestObject *self, PyObject *message) {
  if (!self->response_started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Expected ASGI message 'http.response.start', but got 'http.response.pathsend'.");
    return nullptr;
  }
  if (self->response_complete) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.pathsend' sent, after response already completed.");
    return nullptr;
  }
  if (self->conn == nullptr) return raise_disconnected();
  PyObject *path = PyDict_GetItemWithError(message, names.path);
  if (path == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ASGI 'http.response.pathsend' message without 'path'.");
    return nullptr;
  }
  PyObject *encoded = nullptr;
  if (!PyUnicode_FSConverter(path, &encoded)) return nullptr;
  int fd = open(PyBytes_AS_STRING(encoded), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    Py_DECREF(encoded);
    return nullptr;
  }
  Py_DECREF(encoded);
  struct stat st {};
  if (fstat(fd, &st) < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    close(fd);
    return nullptr;
  }
  self->response_complete = true;
  return finish_write(self, self->conn->send_file(fd, 0, static_cast<uint64_t>(st.st_size)));
}

PyObject *request_send(PyObject *op, PyObject *message) {
  auto *self = reinterpret_cast<RequestObject *>(op);
  // After the client left, ASGI 2.3 (uvicorn) drops the message without a
  // word; 2.4 raises ClientDisconnected (an OSError), as does a stream the
  // server cut to stop.
  if (self->disconnected && !self->server->spec_2_4 && !self->cut_by_stop) return ready_none();
  PyObject *type = message_type(message, PyExc_RuntimeError);
  if (type == nullptr) return nullptr;
  if (type == names.http_response_body || PyUnicode_Compare(type, names.http_response_body) == 0)
    return send_body(self, message);
  if (type == names.http_response_start || PyUnicode_Compare(type, names.http_response_start) == 0)
    return send_start(self, message);
  if (PyUnicode_Compare(type, names.http_response_pathsend) == 0) return send_pathsend(self, message);
  PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for an HTTP connection.", type);
  return nullptr;
}

// True when `exc` is, or was raised while handling or because of (its
// __context__ / __cause__ chain), the ClientDisconnected of our send().
}  // namespace

bool caused_by_disconnect(PyObject *exc, int depth) {
  for (; exc != nullptr && exc != Py_None && depth < 16; ++depth) {
    if (PyObject_TypeCheck(exc, reinterpret_cast<PyTypeObject *>(names.client_disconnected))) return true;
    if (!PyExceptionInstance_Check(exc)) return false;
#if PY_VERSION_HEX >= 0x030B0000
    // A task group (anyio, asyncio.TaskGroup) wraps its children's errors:
    // a group is a disconnect when every error in it is.
    if (PyObject_TypeCheck(exc, reinterpret_cast<PyTypeObject *>(PyExc_BaseExceptionGroup))) {
      PyObject *members = PyObject_GetAttrString(exc, "exceptions");
      bool all = members != nullptr && PyTuple_Check(members) && PyTuple_GET_SIZE(members) > 0;
      for (Py_ssize_t i = 0; all && i < PyTuple_GET_SIZE(members); ++i)
        all = caused_by_disconnect(PyTuple_GET_ITEM(members, i), depth + 1);
      Py_XDECREF(members);
      if (members == nullptr) PyErr_Clear();
      if (all) return true;
    }
#endif
    PyObject *cause = PyException_GetCause(exc);  // new references
    PyObject *context = PyException_GetContext(exc);
    PyObject *next = cause != nullptr ? cause : context;
    // The chain holds them alive: borrowed use is safe.
    Py_XDECREF(cause);
    Py_XDECREF(context);
    exc = next;
  }
  return false;
}

namespace {

// What the server does when the application's coroutine has ended: with an
// exception `exc` (or nullptr), cancelled, or returned normally (`returned`:
// its value, borrowed, nullptr for None). The checks and messages are
// uvicorn's, in its order.
void complete_exchange(RequestObject *self, PyObject *exc, bool was_cancelled, PyObject *returned = nullptr) {
  AppServer &server = *self->server;
  if (exc != nullptr && exc != Py_None) {
    if (self->disconnected && caused_by_disconnect(exc)) {
      // Our own ClientDisconnected (perhaps wrapped, as Starlette's
      // ClientDisconnect) after the client left is the expected end of the
      // exchange, not an app error: a client that hangs up must not be able
      // to fill the log with tracebacks.
      server.log_exception("ASGI application ended by the client's disconnect\n", exc, "debug");
    } else {
      server.log_exception("Exception in ASGI application\n", exc);
      if (self->conn != nullptr) self->conn->fail();
    }
  } else if (was_cancelled) {
    if (self->conn != nullptr) self->conn->abort();
  } else if (returned != nullptr && returned != Py_None) {
    // A value other than None: logged, and the connection closed whatever
    // the response's state.
    PyObject *text = PyObject_Str(returned);
    const char *utf8 = text == nullptr ? nullptr : PyUnicode_AsUTF8(text);
    if (utf8 == nullptr) PyErr_Clear();
    std::string message = "ASGI callable should return None, but returned '";
    message += utf8 != nullptr ? utf8 : Py_TYPE(returned)->tp_name;
    message += "'.";
    Py_XDECREF(text);
    server.log_error(message.c_str());
    if (self->conn != nullptr) self->conn->abort();
  } else if (!self->response_started) {
    if (self->conn != nullptr) {
      server.log_error("ASGI callable returned without starting response.");
      self->conn->fail();
    }
  } else if (!self->response_complete) {
    if (self->conn != nullptr) {
      server.log_error("ASGI callable returned without completing response.");
      self->conn->abort();
    }
  }
}

void request_dealloc(PyObject *op) {
  auto *self = reinterpret_cast<RequestObject *>(op);
  Py_CLEAR(self->receive_waiter);
  Py_CLEAR(self->more_receive_waiters);
  Py_CLEAR(self->send_waiter);
  Py_CLEAR(self->unread_message);
  self->observer.~Observer();
  Py_TYPE(op)->tp_free(op);
}

PyMethodDef receive_def = {"receive", request_receive, METH_NOARGS, "ASGI receive()"};
PyMethodDef send_def = {"send", request_send, METH_O, "ASGI send(message)"};

// ---------------------------------------------------------------- AppRunner
//
// The coroutine the request's task runs: it drives the app's coroutine and,
// when that ends, completes the exchange on the spot. This replaces a done
// callback on the task, which costs a callback object, a call_soon, a pass of
// the event loop and two method calls on the task for every request.
//
// To asyncio it is a coroutine (send/throw/close/__await__, registered as a
// collections.abc.Coroutine); the task's step reaches its am_send directly
// through PyIter_Send. Attributes it does not have (cr_frame, cr_await,
// __qualname__...) are read from the app's coroutine, so task reprs and
// inspect.getcoroutinestate() see the app's coroutine.

struct RunnerObject {
  PyObject_HEAD PyObject *request;  // the Request or WebSocket object, strong
  AppServer *server;
  PyObject *coro;  // the app's coroutine, strong
  PyObject *task;  // borrowed: the task owns this runner
  bool finished;
};

PyObject *cancelled_error = nullptr;  // asyncio.CancelledError

void runner_finish(RunnerObject *self, PyObject *exc, bool was_cancelled, PyObject *returned = nullptr) {
  if (self->finished) return;
  self->finished = true;
  if (self->task != nullptr && PySet_Discard(self->server->tasks, self->task) < 0) PyErr_WriteUnraisable(self->task);
  self->task = nullptr;
  complete_request(self->request, exc, was_cancelled, returned);
}

// The app's coroutine raised (the exception is set). Cancellation goes on to
// the task. Any other exception, KeyboardInterrupt and SystemExit included,
// is logged here (500 if no response started) and ends the task normally:
// uvicorn's request cycle catches BaseException the same way, so an app's
// stray sys.exit() does not stop the worker's loop.
PySendResult runner_failed(RunnerObject *self, PyObject **result) {
  *result = nullptr;
  PyObject *value = take_exception();
  bool cancelled = value != nullptr && PyObject_TypeCheck(value, reinterpret_cast<PyTypeObject *>(cancelled_error));
  runner_finish(self, cancelled ? nullptr : value, cancelled);
  if (cancelled) {
    // Raised again as it was: the traceback travels on the exception.
    PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(value)), value);
    Py_DECREF(value);
    return PYGEN_ERROR;
  }
  Py_XDECREF(value);
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

PySendResult runner_am_send(PyObject *op, PyObject *arg, PyObject **result) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  if (self->finished) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    *result = nullptr;
    return PYGEN_ERROR;
  }
  // A step: a response head the app holds when it ends goes out then.
  Engine &engine = self->server->engine;
  engine.begin_step();
  PySendResult status = PyIter_Send(self->coro, arg, result);
  end_app_step(engine);
  if (status == PYGEN_NEXT) return status;
  if (status == PYGEN_ERROR) return runner_failed(self, result);
  runner_finish(self, nullptr, false, *result);
  Py_CLEAR(*result);
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

// Turns an am_send outcome into the method-call protocol (value, or raise
// StopIteration(value) at the end).
PyObject *runner_result(PySendResult status, PyObject *result) {
  if (status == PYGEN_NEXT) return result;
  if (status == PYGEN_ERROR) return nullptr;
  PyErr_SetObject(PyExc_StopIteration, result);
  Py_DECREF(result);
  return nullptr;
}

PyObject *runner_send(PyObject *op, PyObject *arg) {
  PyObject *result = nullptr;
  PySendResult status = runner_am_send(op, arg, &result);
  return runner_result(status, result);
}

PyObject *runner_next(PyObject *op) {
  return runner_send(op, Py_None);
}

PyObject *runner_throw(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  if (self->finished) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return nullptr;
  }
  PyObject *throw_method = PyObject_GetAttrString(self->coro, "throw");
  PyObject *value = nullptr;
  if (throw_method != nullptr) {
    // A step, as in am_send: a head held when it ends goes out then.
    Engine &engine = self->server->engine;
    engine.begin_step();
    value = PyObject_Vectorcall(throw_method, args, static_cast<size_t>(nargs), nullptr);
    end_app_step(engine);
    Py_DECREF(throw_method);
    if (value != nullptr) return value;  // the app's coroutine caught it and awaits again
  } else if (PyErr_ExceptionMatches(PyExc_AttributeError) && nargs >= 1) {
    // An __await__ iterator without throw(): as with `await`, the exception
    // is raised where the app awaited, which ends it.
    PyErr_Clear();
    if (PyExceptionInstance_Check(args[0]))
      PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(args[0])), args[0]);
    else
      PyErr_SetNone(args[0]);
  } else {
    return nullptr;
  }
  PyObject *result = nullptr;
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *stop = take_exception();
    PyObject *returned = stop == nullptr ? nullptr : PyObject_GetAttrString(stop, "value");
    if (returned == nullptr) PyErr_Clear();
    runner_finish(self, nullptr, false, returned);
    Py_XDECREF(returned);
    Py_XDECREF(stop);
    return runner_result(PYGEN_RETURN, Py_NewRef(Py_None));
  }
  PySendResult status = runner_failed(self, &result);
  return runner_result(status, result);
}

PyObject *runner_close(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  if (self->coro == nullptr) Py_RETURN_NONE;  // cleared by the GC
  PyObject *close = PyObject_GetAttrString(self->coro, "close");
  if (close == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return nullptr;
    PyErr_Clear();  // an __await__ iterator without close(): nothing to close
  } else {
    PyObject *r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
  }
  if (!self->finished) runner_finish(self, nullptr, true);
  Py_RETURN_NONE;
}

PyObject *runner_await(PyObject *op) {
  return Py_NewRef(op);
}

PyObject *runner_getattro(PyObject *op, PyObject *name) {
  PyObject *value = PyObject_GenericGetAttr(op, name);
  if (value != nullptr || !PyErr_ExceptionMatches(PyExc_AttributeError)) return value;
  PyErr_Clear();
  return PyObject_GetAttr(reinterpret_cast<RunnerObject *>(op)->coro, name);
}

PyObject *runner_repr(PyObject *op) {
  return PyObject_Repr(reinterpret_cast<RunnerObject *>(op)->coro);
}

int runner_traverse(PyObject *op, visitproc visit, void *arg) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  Py_VISIT(self->request);
  Py_VISIT(self->coro);
  return 0;
}

int runner_clear(PyObject *op) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  Py_CLEAR(self->coro);
  return 0;
}

void runner_dealloc(PyObject *op) {
  auto *self = reinterpret_cast<RunnerObject *>(op);
  PyObject_GC_UnTrack(op);
  Py_CLEAR(self->coro);
  Py_CLEAR(self->request);
  PyObject_GC_Del(op);
}

PyMethodDef runner_methods[] = {{"send", runner_send, METH_O, "Resumes the app's coroutine."},
                                {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(runner_throw)),
                                 METH_FASTCALL, "Raises an exception inside the app's coroutine."},
                                {"close", runner_close, METH_NOARGS, "Closes the app's coroutine."},
                                {nullptr, nullptr, 0, nullptr}};

PyAsyncMethods runner_async = {runner_await, nullptr, nullptr, runner_am_send};

}  // namespace

PyTypeObject RunnerType{};

PyTypeObject RequestType{};

Engine &request_engine(PyObject *request) {
  if (Py_TYPE(request) == &WebSocketType) return websocket_engine(request);
  return reinterpret_cast<RequestObject *>(request)->server->engine;
}

void complete_request(PyObject *request, PyObject *exc, bool cancelled, PyObject *returned) {
  if (Py_TYPE(request) == &WebSocketType) {
    complete_websocket(request, exc, cancelled, returned);
    return;
  }
  complete_exchange(reinterpret_cast<RequestObject *>(request), exc, cancelled, returned);
}

void fill_request_type() {
  // Filled at run time: C++ has no designated initializers for all of PyTypeObject's fields.
  RequestType.ob_base.ob_base.ob_refcnt = 1;
  RequestType.tp_name = "pronghorn._core.Request";
  RequestType.tp_basicsize = sizeof(RequestObject);
  RequestType.tp_dealloc = request_dealloc;
  RequestType.tp_flags = Py_TPFLAGS_DEFAULT;
  RequestType.tp_doc = "One HTTP exchange.";
}

bool init_request_type() {
  fill_request_type();
  RunnerType.ob_base.ob_base.ob_refcnt = 1;
  RunnerType.tp_name = "pronghorn._core.AppRunner";
  RunnerType.tp_basicsize = sizeof(RunnerObject);
  RunnerType.tp_dealloc = runner_dealloc;
  RunnerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  RunnerType.tp_doc = "Runs an ASGI app's coroutine for one request and completes the exchange when it ends.";
  RunnerType.tp_traverse = runner_traverse;
  RunnerType.tp_clear = runner_clear;
  RunnerType.tp_as_async = &runner_async;
  RunnerType.tp_iter = PyObject_SelfIter;
  RunnerType.tp_iternext = runner_next;
  RunnerType.tp_methods = runner_methods;
  RunnerType.tp_getattro = runner_getattro;
  RunnerType.tp_repr = runner_repr;
  if (PyType_Ready(&RequestType) < 0 || PyType_Ready(&RunnerType) < 0) return false;
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  if (asyncio == nullptr) return false;
  cancelled_error = PyObject_GetAttrString(asyncio, "CancelledError");
  Py_DECREF(asyncio);
  if (cancelled_error == nullptr) return false;
  // Make asyncio.iscoroutine() (which Task checks) accept it by type.
  PyObject *abc = PyImport_ImportModule("collections.abc");
  PyObject *coroutine_abc = abc == nullptr ? nullptr : PyObject_GetAttrString(abc, "Coroutine");
  Py_XDECREF(abc);
  PyObject *r = coroutine_abc == nullptr ? nullptr : PyObject_CallMethod(coroutine_abc, "register", "O", &RunnerType);
  Py_XDECREF(coroutine_abc);
  Py_XDECREF(r);
  return r != nullptr;
}

// Logs the Python exception that is set as an error of the app.
void log_app_exception(AppServer &server) {
  PyObject *exc = take_exception();
  server.log_exception("Exception in ASGI application\n", exc);
  Py_XDECREF(exc);
}

// loop.create_task(coro) with `context` entered: the task takes a copy of
// it. Not create_task(coro, context=context): loop.create_task then passes
// the context to the loop's task factory, and a factory written for the API
// before Python 3.11 (factory(loop, coro)) fails on it.
static PyObject *create_task(AppServer &server, PyObject *coro, PyObject *context) {
  if (PyContext_Enter(context) < 0) return nullptr;
  PyObject *task = PyObject_CallOneArg(server.create_task, coro);
  // Fails only when the factory left another context entered (the task, if
  // made, runs: it is returned, the error reported).
  if (PyContext_Exit(context) < 0 && task != nullptr) PyErr_WriteUnraisable(server.create_task);
  return task;
}

// fn(arg) with `context` entered: new reference, or nullptr with an
// exception set.
static PyObject *in_context(PyObject *context, PyObject *(*fn)(PyObject *), PyObject *arg) {
  if (PyContext_Enter(context) < 0) return nullptr;
  PyObject *result = fn(arg);
  if (PyContext_Exit(context) < 0) Py_CLEAR(result);
  return result;
}

// The app's awaitable as an iterator an AppRunner can drive, as `await` would
// take it: a native coroutine or a generator-based one (types.coroutine) as it
// is, anything else through its __await__. New reference, or nullptr with the
// TypeError `await` would raise.
static PyObject *awaitable_iterator(PyObject *awaitable) {
  if (PyCoro_CheckExact(awaitable)) return Py_NewRef(awaitable);
  if (PyGen_CheckExact(awaitable)) {
    PyObject *code = PyObject_GetAttrString(awaitable, "gi_code");
    PyObject *flags = code == nullptr ? nullptr : PyObject_GetAttrString(code, "co_flags");
    Py_XDECREF(code);
    if (flags == nullptr) return nullptr;
    long value = PyLong_AsLong(flags);
    Py_DECREF(flags);
    if (value == -1 && PyErr_Occurred()) return nullptr;
    if (value & CO_ITERABLE_COROUTINE) return Py_NewRef(awaitable);
  } else if (Py_TYPE(awaitable)->tp_as_async != nullptr && Py_TYPE(awaitable)->tp_as_async->am_await != nullptr) {
    PyObject *iterator = Py_TYPE(awaitable)->tp_as_async->am_await(awaitable);
    if (iterator == nullptr) return nullptr;
    if (!PyIter_Check(iterator) || PyCoro_CheckExact(iterator)) {
      PyErr_Format(PyExc_TypeError, "__await__() returned %s",
                   PyCoro_CheckExact(iterator) ? "a coroutine" : "non-iterator");
      Py_DECREF(iterator);
      return nullptr;
    }
    return iterator;
  }
  PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression", Py_TYPE(awaitable)->tp_name);
  return nullptr;
}

// Starts the app's awaitable for `self`: a native coroutine in a RequestTask;
// with --asyncio-tasks, a task factory, or an awaitable that is not a native
// coroutine, in an AppRunner inside an asyncio Task (asyncio 3.12+ no longer
// takes a generator-based coroutine for a Task; the runner is a Coroutine).
// New reference to the task, or nullptr with an exception set when nothing
// was started.
PyObject *run_app(AppServer &server, PyObject *op, PyObject *awaitable, PyObject *context) {
  PyObject *task = nullptr;
  if (server.request_tasks && PyCoro_CheckExact(awaitable)) {
    task = start_request_task(server, op, awaitable, context);
  } else if (PyObject *iterator = in_context(context, awaitable_iterator, awaitable)) {
    auto *runner = PyObject_GC_New(RunnerObject, &RunnerType);
    if (runner != nullptr) {
      runner->request = Py_NewRef(op);
      runner->server = &server;
      runner->coro = Py_NewRef(iterator);
      runner->task = nullptr;
      runner->finished = false;
      PyObject_GC_Track(runner);
      task = create_task(server, reinterpret_cast<PyObject *>(runner), context);
      // An eager task factory may have run the coroutine to its end already:
      // only a running task goes into the set (the runner takes it out).
      if (task != nullptr && !runner->finished) {
        if (PySet_Add(server.tasks, task) < 0)
          PyErr_WriteUnraisable(task);  // not tracked; it runs anyway
        else
          runner->task = task;
      }
      Py_DECREF(runner);
    }
    Py_DECREF(iterator);
  }
  return task;
}

PyObject *call_app(AppServer &server, PyObject *owner, PyMethodDef *receive_def, PyMethodDef *send_def, PyObject *scope,
                   PyObject *context) {
  PyObject *receive = PyCFunction_New(receive_def, owner);
  PyObject *send = PyCFunction_New(send_def, owner);
  PyObject *coro = nullptr;
  if (receive != nullptr && send != nullptr && PyContext_Enter(context) == 0) {
    PyObject *args[] = {scope, receive, send};
    coro = PyObject_Vectorcall(server.app, args, 3, nullptr);
    if (PyContext_Exit(context) < 0) Py_CLEAR(coro);  // the app left another context entered
  }
  Py_XDECREF(receive);  // the coroutine holds them
  Py_XDECREF(send);
  return coro;
}

void start_request(AppServer &server, http::Exchange &conn, PyObject *scope) {
  auto *self = PyObject_New(RequestObject, &RequestType);
  if (self == nullptr) {
    server.log_exception("Cannot create request", nullptr);
    conn.fail();
    return;
  }
  new (&self->observer) Observer(self);
  self->server = &server;
  self->conn = &conn;
  self->receive_waiter = nullptr;
  self->more_receive_waiters = nullptr;
  self->send_waiter = nullptr;
  self->unread_message = nullptr;
  self->disconnected = false;
  self->cut_by_stop = false;
  self->response_started = false;
  self->response_complete = false;
  self->body_delivered = false;
  PyObject *op = reinterpret_cast<PyObject *>(self);

  PyObject *context = server.new_request_context();
  PyObject *coro = context == nullptr ? nullptr : call_app(server, op, &receive_def, &send_def, scope, context);
  if (coro == nullptr) {
    // The app could not even be called (not an ASGI 3 callable, or it raised).
    log_app_exception(server);
    self->conn = nullptr;  // receive/send, if the app kept them, must not reach the connection
    Py_XDECREF(context);
    Py_DECREF(op);
    conn.fail();
    return;
  }
  // The connection holds our reference until on_detach(). Attached before the
  // coroutine starts: its first step may run at once and complete the response.
  conn.attach(&self->observer);
  PyObject *task = run_app(server, op, coro, context);
  Py_DECREF(coro);
  Py_DECREF(context);
  if (task == nullptr) {
    log_app_exception(server);
    if (self->conn != nullptr) self->conn->fail();  // detaches: may free `self`
    return;
  }
  Py_DECREF(task);
}

}  // namespace pronghorn::bridge
