// One ASGI WebSocket: the websocket scope, the `receive` and `send` callables
// handed to the application, and the observers that wake them: the HTTP
// exchange's while the handshake is open (accept, or a denial response), the
// WebSocket session's once accepted. The checks and error messages follow
// uvicorn's websockets-sansio implementation.
#include <new>
#include <string>

#include "bridge/bridge.h"
#include "engine/http/target.h"
#include "engine/http1/response.h"
#include "engine/log.h"
#include "engine/ws/handshake.h"
#include "engine/ws/session.h"

namespace pronghorn::bridge {

namespace {

struct WsNames {
  PyObject *websocket, *connect, *receive, *disconnect, *accept, *send, *close, *response_start, *response_body;
  PyObject *bytes, *text, *code, *reason, *subprotocol, *subprotocols, *scheme_ws, *scheme_wss, *http_response;
  PyObject *connect_message;  // {"type": "websocket.connect"}
  PyObject *extensions;       // {"websocket.http.response": {}}
};
WsNames ws_names;

struct WebSocketObject;

class HandshakeObserver final : public http::ExchangeObserver {
 public:
  explicit HandshakeObserver(WebSocketObject *owner) : owner_(owner) {}
  void on_body_ready() override {}
  void on_writable() override;
  void on_detach(http::Detach why) override;

 private:
  WebSocketObject *owner_;
};

class SessionObserver final : public ws::MessageObserver {
 public:
  explicit SessionObserver(WebSocketObject *owner) : owner_(owner) {}
  void on_message() override;
  void on_writable() override;
  void on_detach(uint16_t code, std::string_view reason) override;

 private:
  WebSocketObject *owner_;
};

struct WebSocketObject {
  PyObject_HEAD HandshakeObserver handshake_observer;
  SessionObserver session_observer;
  AppServer *server;
  http::Exchange *conn;      // the handshake's exchange, until it is accepted or answered
  ws::Session *ws;           // the session once accepted, until it lets go of us
  PyObject *waiters;         // list of receive() Futures, oldest first
  PyObject *send_waiters;    // list of Futures of send() calls waiting for the peer to read, or nullptr
  PyObject *waiting_task;    // the RequestTask of the last receive() that waits (resolve_and_resume)
  PyObject *unread;          // list of websocket.receive messages left when the session let go, or nullptr
  PyObject *denial_headers;  // websocket.http.response.start's headers (list), or nullptr
  PyObject *denial_body;     // bytearray of its body so far
  std::string log_target;    // the path and query for the log lines
  int denial_status;
  uint16_t disconnect_code;
  PyObject *disconnect_reason;  // str
  bool connect_delivered;
  bool accepted;
  bool close_sent;    // the app sent websocket.close (or a denial ended the handshake)
  bool disconnected;  // the connection is gone or closing: receive() says websocket.disconnect
};

PyObject *disconnect_message(WebSocketObject *self) {
  PyObject *code = PyLong_FromLong(self->disconnect_code);
  if (code == nullptr) return nullptr;
  PyObject *message = Py_BuildValue("{sOsOsO}", "type", ws_names.disconnect, "code", code, "reason",
                                    self->disconnect_reason != nullptr ? self->disconnect_reason : names.empty_str);
  Py_DECREF(code);
  return message;
}

PyObject *message_object(ws::Message &message) {
  PyObject *data =
      message.text ? PyUnicode_DecodeUTF8(message.data.data(), static_cast<Py_ssize_t>(message.data.size()), "strict")
                   : PyBytes_FromStringAndSize(message.data.data(), static_cast<Py_ssize_t>(message.data.size()));
  if (data == nullptr) return nullptr;
  PyObject *dict = PyDict_New();
  if (dict == nullptr || PyDict_SetItem(dict, names.type, ws_names.receive) < 0 ||
      PyDict_SetItem(dict, message.text ? ws_names.text : ws_names.bytes, data) < 0) {
    Py_XDECREF(dict);
    Py_DECREF(data);
    return nullptr;
  }
  Py_DECREF(data);
  return dict;
}

// Resolves a Future unless it was cancelled; false when it was no longer pending.
bool resolve_future(PyObject *future, PyObject *method, PyObject *value) {
  PyObject *done = PyObject_CallMethodNoArgs(future, names.done);
  bool pending = done == Py_False;
  Py_XDECREF(done);
  if (done == nullptr) PyErr_WriteUnraisable(future);
  if (pending) {
    PyObject *r = PyObject_CallMethodOneArg(future, method, value);
    if (r == nullptr) PyErr_WriteUnraisable(future);
    Py_XDECREF(r);
  }
  return pending;
}

// The oldest receive() waiter still pending, taken out of the list (new
// reference), or nullptr.
PyObject *take_waiter(WebSocketObject *self) {
  while (self->waiters != nullptr && PyList_GET_SIZE(self->waiters) > 0) {
    PyObject *future = Py_NewRef(PyList_GET_ITEM(self->waiters, 0));
    if (PyList_SetSlice(self->waiters, 0, 1, nullptr) < 0) PyErr_WriteUnraisable(self->waiters);
    PyObject *done = PyObject_CallMethodNoArgs(future, names.done);
    bool pending = done == Py_False;
    Py_XDECREF(done);
    if (done == nullptr) PyErr_Clear();
    if (pending) return future;
    Py_DECREF(future);
  }
  return nullptr;
}

// Hands queued messages to waiting receive() calls.
void deliver_messages(WebSocketObject *self) {
  // The app may run to its end inside resolve_and_resume() and drop the last
  // other reference to us.
  Py_INCREF(reinterpret_cast<PyObject *>(self));
  while (self->ws != nullptr && self->ws->has_message() && self->waiters != nullptr &&
         PyList_GET_SIZE(self->waiters) > 0) {
    bool only = PyList_GET_SIZE(self->waiters) == 1;
    PyObject *waiter = take_waiter(self);
    if (waiter == nullptr) break;
    ws::Message message;
    self->ws->take_message(message);  // may read on, and so queue more
    PyObject *dict = message_object(message);
    if (dict == nullptr) {
      PyErr_WriteUnraisable(waiter);
      Py_DECREF(waiter);
      break;
    }
    // The one waiter is the last receive()'s: its task may run at once.
    PyObject *task = self->waiting_task;
    self->waiting_task = nullptr;
    resolve_and_resume(only ? task : nullptr, waiter, dict);
    Py_XDECREF(task);
    Py_DECREF(dict);
    Py_DECREF(waiter);
  }
  Py_DECREF(reinterpret_cast<PyObject *>(self));
}

// Every send() waiting (several tasks may send on one WebSocket): resumed,
// or, when `gone`, raising ClientDisconnected (the peer left unread).
void wake_senders(WebSocketObject *self, bool gone) {
  PyObject *waiters = self->send_waiters;
  self->send_waiters = nullptr;
  if (waiters == nullptr) return;
  PyObject *exc = nullptr;
  if (gone) {
    PyObject *text = PyUnicode_FromString("client disconnected");
    exc = text == nullptr ? nullptr : PyObject_CallOneArg(names.client_disconnected, text);
    Py_XDECREF(text);
    if (exc == nullptr) PyErr_WriteUnraisable(waiters);
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiters); ++i)
    resolve_future(PyList_GET_ITEM(waiters, i), exc != nullptr ? names.set_exception : names.set_result,
                   exc != nullptr ? exc : Py_None);
  Py_XDECREF(exc);
  Py_DECREF(waiters);
}

void wake_all_disconnected(WebSocketObject *self) {
  Py_CLEAR(self->waiting_task);
  while (PyObject *waiter = take_waiter(self)) {
    PyObject *message = disconnect_message(self);
    if (message != nullptr) {
      resolve_future(waiter, names.set_result, message);
      Py_DECREF(message);
    } else {
      PyErr_WriteUnraisable(waiter);
    }
    Py_DECREF(waiter);
  }
  // A send() waiting for the peer to read: it did not read, it left.
  wake_senders(self, !self->close_sent);
}

void set_disconnected(WebSocketObject *self, uint16_t code, std::string_view reason) {
  if (self->disconnected) return;
  self->disconnected = true;
  self->disconnect_code = code;
  PyObject *text = PyUnicode_DecodeUTF8(reason.data(), static_cast<Py_ssize_t>(reason.size()), "replace");
  if (text == nullptr) PyErr_Clear();
  Py_XSETREF(self->disconnect_reason, text);
}

void HandshakeObserver::on_writable() {
  WebSocketObject *self = owner_;
  wake_senders(self, false);
}

void HandshakeObserver::on_detach(http::Detach) {
  // The handshake ended without a WebSocket: a denial or 403 was sent, or
  // the client left. uvicorn's app sees 1006 either way.
  WebSocketObject *self = owner_;
  self->conn = nullptr;
  set_disconnected(self, ws::close_code::Abnormal, "");
  wake_all_disconnected(self);
  Py_DECREF(reinterpret_cast<PyObject *>(self));  // the exchange's reference
}

void SessionObserver::on_message() {
  deliver_messages(owner_);
}

void SessionObserver::on_writable() {
  WebSocketObject *self = owner_;
  wake_senders(self, false);
}

void SessionObserver::on_detach(uint16_t code, std::string_view reason) {
  WebSocketObject *self = owner_;
  // Messages that came before the peer's close are the app's (RFC 6455
  // §7.1.2: a clean close means they were received): waiting receive()s get
  // them, the rest stay for the next receive()s, then the disconnect.
  deliver_messages(self);
  ws::Message message;
  while (self->ws->take_message(message)) {
    PyObject *dict = message_object(message);
    if (dict == nullptr || (self->unread == nullptr && (self->unread = PyList_New(0)) == nullptr) ||
        PyList_Append(self->unread, dict) < 0) {
      Py_XDECREF(dict);
      PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
      break;
    }
    Py_DECREF(dict);
  }
  self->ws = nullptr;
  set_disconnected(self, code, reason);
  wake_all_disconnected(self);
  Py_DECREF(reinterpret_cast<PyObject *>(self));  // the session's reference
}

PyObject *raise_disconnected() {
  PyErr_SetString(names.client_disconnected, "client disconnected");
  return nullptr;
}

// ---- receive() ----

PyObject *websocket_receive(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<WebSocketObject *>(op);
  if (!self->connect_delivered) {
    self->connect_delivered = true;
    return ready(PyDict_Copy(ws_names.connect_message));
  }
  // Waiters the app cancelled (asyncio.wait_for timing out) leave the list.
  for (Py_ssize_t i = self->waiters == nullptr ? 0 : PyList_GET_SIZE(self->waiters); i-- > 0;) {
    PyObject *done = PyObject_CallMethodNoArgs(PyList_GET_ITEM(self->waiters, i), names.done);
    if (done == nullptr) return nullptr;
    bool finished = done == Py_True;
    Py_DECREF(done);
    if (finished && PyList_SetSlice(self->waiters, i, i + 1, nullptr) < 0) return nullptr;
  }
  bool others_waiting = self->waiters != nullptr && PyList_GET_SIZE(self->waiters) > 0;
  if (!others_waiting && self->ws != nullptr) {
    ws::Message message;
    if (self->ws->take_message(message)) return ready(message_object(message));
  }
  if (!others_waiting && self->unread != nullptr && PyList_GET_SIZE(self->unread) > 0) {
    PyObject *message = Py_NewRef(PyList_GET_ITEM(self->unread, 0));
    if (PyList_SetSlice(self->unread, 0, 1, nullptr) < 0) {
      Py_DECREF(message);
      return nullptr;
    }
    return ready(message);
  }
  if (self->disconnected && !others_waiting) return ready(disconnect_message(self));
  if (self->waiters == nullptr && (self->waiters = PyList_New(0)) == nullptr) return nullptr;
  PyObject *future = PyObject_CallNoArgs(self->server->create_future);
  if (future == nullptr) return nullptr;
  if (PyList_Append(self->waiters, future) < 0) {
    Py_DECREF(future);
    return nullptr;
  }
  Py_XSETREF(self->waiting_task, Py_XNewRef(running_request_task(self->server->loop)));
  return future;
}

// ---- send() ----

// message[key] as a borrowed reference, or nullptr (an exception is set
// only on a failed lookup).
PyObject *get(PyObject *message, PyObject *key) {
  return PyDict_GetItemWithError(message, key);
}

PyObject *finish_send(WebSocketObject *self, http::WriteStatus status) {
  switch (status) {
    case http::WriteStatus::Ok: return ready_none();
    case http::WriteStatus::Blocked: {
      PyObject *future = PyObject_CallNoArgs(self->server->create_future);
      if (future == nullptr) return nullptr;
      if (self->send_waiters == nullptr && (self->send_waiters = PyList_New(0)) == nullptr) {
        Py_DECREF(future);
        return nullptr;
      }
      if (PyList_Append(self->send_waiters, future) < 0) {
        Py_DECREF(future);
        return nullptr;
      }
      return future;
    }
    default: return raise_disconnected();
  }
}

// Text of at most `limit` bytes of UTF-8, cut at a character boundary.
std::string_view clip_utf8(const char *data, size_t len, size_t limit) {
  if (len <= limit) return {data, len};
  size_t n = limit;
  while (n > 0 && (static_cast<unsigned char>(data[n]) & 0xC0) == 0x80) --n;
  return {data, n};
}

bool parse_close(PyObject *message, long &code, std::string_view &reason) {
  code = ws::close_code::Normal;
  PyObject *code_obj = get(message, ws_names.code);
  if (code_obj == nullptr && PyErr_Occurred()) return false;
  if (code_obj != nullptr && code_obj != Py_None) {
    code = PyLong_AsLong(code_obj);
    if (code == -1 && PyErr_Occurred()) return false;
  }
  reason = {};
  PyObject *reason_obj = get(message, ws_names.reason);
  if (reason_obj == nullptr && PyErr_Occurred()) return false;
  if (reason_obj != nullptr && reason_obj != Py_None) {
    Py_ssize_t len = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(reason_obj, &len);
    if (utf8 == nullptr) return false;
    // A close frame's payload is at most 125 bytes: the code and 123 of reason.
    reason = clip_utf8(utf8, static_cast<size_t>(len), 123);
  }
  return true;
}

PyObject *send_accept(WebSocketObject *self, PyObject *message) {
  if (self->conn == nullptr) {
    // The client left during the handshake.
    return raise_disconnected();
  }
  std::string_view subprotocol;
  PyObject *sub = get(message, ws_names.subprotocol);
  if (sub == nullptr && PyErr_Occurred()) return nullptr;
  if (sub != nullptr && sub != Py_None) {
    Py_ssize_t len = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(sub, &len);
    if (utf8 == nullptr) return nullptr;
    subprotocol = {utf8, static_cast<size_t>(len)};
  }
  http::HeaderList headers;
  PyObject *headers_obj = get(message, names.headers);
  if (headers_obj == nullptr && PyErr_Occurred()) return nullptr;
  PyObject *keep = nullptr;
  if (!parse_headers(headers_obj, headers, &keep)) return nullptr;
  const char *error = nullptr;
  http::Exchange *conn = self->conn;
  ws::Session *session = conn->accept_websocket(subprotocol, headers, &error);
  Py_XDECREF(keep);
  if (error != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, error);
    return nullptr;
  }
  self->accepted = true;
  if (session == nullptr) {
    // The client is gone (the exchange detached us, or is about to).
    return ready_none();
  }
  // The exchange let go of us without on_detach: its reference passes to
  // the session.
  self->conn = nullptr;
  self->ws = session;
  session->attach(&self->session_observer);  // may detach at once (closed already)
  deliver_messages(self);
  return ready_none();
}

void log_handshake(WebSocketObject *self, const SocketAddress &peer, const char *outcome) {
  if (peer.is_unix || peer.host.empty())
    log(LogLevel::Info, "unix socket - \"WebSocket %s\" %s", self->log_target.c_str(), outcome);
  else
    log(LogLevel::Info, "%s:%d - \"WebSocket %s\" %s", peer.host.c_str(), peer.port, self->log_target.c_str(), outcome);
}

// The line the websockets library logs under uvicorn for every handshake
// answered with something other than 101 (the app's close before accept: 403;
// its denial response; 500 after an exception), after the access line.
void log_rejected(int status) {
  log(LogLevel::Info, "connection rejected (%d %s)", status, http1::reason_phrase(status));
}

PyObject *send_denial_start(WebSocketObject *self, PyObject *message) {
  PyObject *status_obj = get(message, names.status);
  if (status_obj == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status");
    return nullptr;
  }
  long status = PyLong_AsLong(status_obj);
  if (status == -1 && PyErr_Occurred()) return nullptr;
  if (status < 100 || status >= 600) {
    PyErr_Format(PyExc_RuntimeError, "Invalid HTTP status code '%ld' in response.", status);
    return nullptr;
  }
  if (self->conn != nullptr) log_handshake(self, self->conn->log_client(), std::to_string(status).c_str());
  PyObject *headers = get(message, names.headers);
  if (headers == nullptr && PyErr_Occurred()) return nullptr;
  PyObject *list = headers == nullptr || headers == Py_None ? PyList_New(0) : PySequence_List(headers);
  if (list == nullptr) return nullptr;
  PyObject *body = PyByteArray_FromStringAndSize(nullptr, 0);
  if (body == nullptr) {
    Py_DECREF(list);
    return nullptr;
  }
  Py_XSETREF(self->denial_headers, list);
  Py_XSETREF(self->denial_body, body);
  self->denial_status = static_cast<int>(status);
  return ready_none();
}

// The denial response, or 403, with the headers websockets' reject() gives it
// (Content-Length and Content-Type unless the app set them; Date, Server and
// Connection: close come from the exchange).
PyObject *send_http_response(WebSocketObject *self, int status, PyObject *header_list, const char *body,
                             size_t body_len) {
  http::HeaderList headers;
  PyObject *keep = nullptr;
  if (!parse_headers(header_list, headers, &keep)) return nullptr;
  bool has_length = false, has_type = false;
  for (const auto &[name, value] : headers) {
    if (name.size() == 14 && PyOS_strnicmp(name.data(), "content-length", 14) == 0) has_length = true;
    if (name.size() == 12 && PyOS_strnicmp(name.data(), "content-type", 12) == 0) has_type = true;
  }
  std::string length = std::to_string(body_len);
  if (!has_length) headers.emplace_back("content-length", length);
  if (!has_type) headers.emplace_back("content-type", "text/plain; charset=utf-8");
  self->close_sent = true;
  http::Exchange *conn = self->conn;
  if (conn == nullptr) {
    Py_XDECREF(keep);
    return raise_disconnected();
  }
  const char *error = conn->start_response(status, headers);
  Py_XDECREF(keep);
  if (error != nullptr) {
    self->close_sent = false;
    PyErr_SetString(PyExc_RuntimeError, error);
    return nullptr;
  }
  log_rejected(status);
  conn->write_body(body, body_len, false);  // completes the exchange: detaches us (1006)
  return ready_none();
}

PyObject *send_denial_body(WebSocketObject *self, PyObject *message) {
  PyObject *body = get(message, names.body);
  if (body == nullptr && PyErr_Occurred()) return nullptr;
  if (body != nullptr) {
    PyObject *r = PySequence_InPlaceConcat(self->denial_body, body);
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
  }
  PyObject *more_obj = get(message, names.more_body);
  if (more_obj == nullptr && PyErr_Occurred()) return nullptr;
  int more = more_obj == nullptr ? 0 : PyObject_IsTrue(more_obj);
  if (more < 0) return nullptr;
  if (more) return ready_none();
  return send_http_response(self, self->denial_status, self->denial_headers, PyByteArray_AS_STRING(self->denial_body),
                            static_cast<size_t>(PyByteArray_GET_SIZE(self->denial_body)));
}

bool type_is(PyObject *type, PyObject *name) {
  return type == name || PyUnicode_Compare(type, name) == 0;
}

PyObject *unexpected(const char *format, PyObject *type) {
  PyErr_Format(PyExc_RuntimeError, format, type);
  return nullptr;
}

PyObject *websocket_send(PyObject *op, PyObject *message) {
  auto *self = reinterpret_cast<WebSocketObject *>(op);
  PyObject *type = message_type(message, PyExc_KeyError);
  if (type == nullptr) return nullptr;
  // After the connection is gone, as uvicorn: ClientDisconnected.
  if (self->disconnected && !self->close_sent) return raise_disconnected();

  if (!self->accepted && self->denial_headers == nullptr && !self->close_sent) {
    // The handshake.
    if (type_is(type, ws_names.accept)) {
      if (self->conn != nullptr) log_handshake(self, self->conn->log_client(), "[accepted]");
      return send_accept(self, message);
    }
    if (type_is(type, ws_names.close)) {
      if (self->conn != nullptr) log_handshake(self, self->conn->log_client(), "403");
      return send_http_response(self, 403, nullptr, "", 0);
    }
    if (type_is(type, ws_names.response_start)) return send_denial_start(self, message);
    return unexpected(
        "Expected ASGI message 'websocket.accept', 'websocket.close' or 'websocket.http.response.start' but got "
        "'%U'.",
        type);
  }
  if (self->denial_headers != nullptr && !self->close_sent) {
    if (type_is(type, ws_names.response_body)) return send_denial_body(self, message);
    return unexpected("Expected ASGI message 'websocket.http.response.body' but got '%U'.", type);
  }
  if (self->close_sent) return unexpected("Unexpected ASGI message '%U', after sending 'websocket.close'.", type);

  // Open.
  if (type_is(type, ws_names.send)) {
    if (self->ws == nullptr) return raise_disconnected();
    PyObject *bytes = get(message, ws_names.bytes);
    if (bytes == nullptr && PyErr_Occurred()) return nullptr;
    if (bytes != nullptr && bytes != Py_None) {
      Py_buffer view;
      if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) return nullptr;
      http::WriteStatus status =
          self->ws->send(false, static_cast<const char *>(view.buf), static_cast<size_t>(view.len));
      PyBuffer_Release(&view);
      return finish_send(self, status);
    }
    PyObject *text = get(message, ws_names.text);
    if (text == nullptr && PyErr_Occurred()) return nullptr;
    if (text != nullptr && text != Py_None) {
      Py_ssize_t len = 0;
      const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
      if (utf8 == nullptr) return nullptr;
      return finish_send(self, self->ws->send(true, utf8, static_cast<size_t>(len)));
    }
    return ready_none();  // neither: nothing to send (uvicorn sends nothing either)
  }
  if (type_is(type, ws_names.close)) {
    long code;
    std::string_view reason;
    if (!parse_close(message, code, reason)) return nullptr;
    if (code < 0 || code > 65535 || !ws::valid_close_code(static_cast<uint16_t>(code))) {
      PyErr_Format(PyExc_ValueError, "invalid WebSocket close code %ld", code);
      return nullptr;
    }
    self->close_sent = true;
    if (self->ws == nullptr) return ready_none();
    self->ws->close(static_cast<uint16_t>(code), reason);  // detaches us with this code and reason
    return ready_none();
  }
  return unexpected("Expected ASGI message 'websocket.send' or 'websocket.close', but got '%U'.", type);
}

void websocket_dealloc(PyObject *op) {
  auto *self = reinterpret_cast<WebSocketObject *>(op);
  Py_CLEAR(self->waiters);
  Py_CLEAR(self->send_waiters);
  Py_CLEAR(self->waiting_task);
  Py_CLEAR(self->unread);
  Py_CLEAR(self->denial_headers);
  Py_CLEAR(self->denial_body);
  Py_CLEAR(self->disconnect_reason);
  self->handshake_observer.~HandshakeObserver();
  self->session_observer.~SessionObserver();
  using std::string;
  self->log_target.~string();
  Py_TYPE(op)->tp_free(op);
}

PyMethodDef receive_def = {"receive", websocket_receive, METH_NOARGS, "ASGI receive()"};
PyMethodDef send_def = {"send", websocket_send, METH_O, "ASGI send(message)"};

// The websocket scope from the HTTP scope built for the handshake request:
// type, scheme ws/wss, no method, subprotocols, the denial extension (and
// TLS's), spec 2.4 as uvicorn's.
bool make_websocket_scope(AppServer &server, PyObject *scope, const http::RequestHead &head,
                          const http::Exchange &exchange) {
  if (PyDict_SetItem(scope, names.type, ws_names.websocket) < 0) return false;
  if (PyDict_DelItem(scope, names.method) < 0) return false;
  PyObject *scheme = PyDict_GetItemWithError(scope, names.scheme);
  if (scheme == nullptr) return false;
  bool secure = PyUnicode_Compare(scheme, names.scheme_https) == 0;
  if (PyDict_SetItem(scope, names.scheme, secure ? ws_names.scheme_wss : ws_names.scheme_ws) < 0) return false;
  PyObject *asgi = PyDict_Copy(names.asgi_template_2_4);
  if (asgi == nullptr || PyDict_SetItem(scope, names.asgi, asgi) < 0) {
    Py_XDECREF(asgi);
    return false;
  }
  Py_DECREF(asgi);
  PyObject *subprotocols = PyList_New(0);
  if (subprotocols == nullptr) return false;
  for (std::string_view token : head.websocket->subprotocols) {
    PyObject *item = PyUnicode_DecodeLatin1(token.data(), static_cast<Py_ssize_t>(token.size()), nullptr);
    if (item == nullptr || PyList_Append(subprotocols, item) < 0) {
      Py_XDECREF(item);
      Py_DECREF(subprotocols);
      return false;
    }
    Py_DECREF(item);
  }
  int rc = PyDict_SetItem(scope, ws_names.subprotocols, subprotocols);
  Py_DECREF(subprotocols);
  if (rc < 0) return false;
  const TlsInfo *tls = exchange.tls();
  PyObject *extensions = tls != nullptr ? server.tls_extensions(*tls) : PyDict_New();
  if (extensions == nullptr) return false;
  // pathsend is for HTTP responses only.
  if (PyDict_DelItemString(extensions, "http.response.pathsend") < 0) PyErr_Clear();
  PyObject *empty = PyDict_New();
  rc = empty == nullptr ? -1 : PyDict_SetItem(extensions, ws_names.http_response, empty);
  Py_XDECREF(empty);
  if (rc == 0) rc = PyDict_SetItem(scope, names.extensions, extensions);
  Py_DECREF(extensions);
  return rc == 0;
}

}  // namespace

PyTypeObject WebSocketType{};

Engine &websocket_engine(PyObject *websocket) {
  return reinterpret_cast<WebSocketObject *>(websocket)->server->engine;
}

bool init_websocket_type() {
  WebSocketType.ob_base.ob_base.ob_refcnt = 1;
  WebSocketType.tp_name = "pronghorn._core.WebSocket";
  WebSocketType.tp_basicsize = sizeof(WebSocketObject);
  WebSocketType.tp_dealloc = websocket_dealloc;
  WebSocketType.tp_flags = Py_TPFLAGS_DEFAULT;
  WebSocketType.tp_doc = "One WebSocket connection.";
  if (PyType_Ready(&WebSocketType) < 0) return false;
  auto intern = [](const char *s) { return PyUnicode_InternFromString(s); };
  ws_names.websocket = intern("websocket");
  ws_names.connect = intern("websocket.connect");
  ws_names.receive = intern("websocket.receive");
  ws_names.disconnect = intern("websocket.disconnect");
  ws_names.accept = intern("websocket.accept");
  ws_names.send = intern("websocket.send");
  ws_names.close = intern("websocket.close");
  ws_names.response_start = intern("websocket.http.response.start");
  ws_names.response_body = intern("websocket.http.response.body");
  ws_names.bytes = intern("bytes");
  ws_names.text = intern("text");
  ws_names.code = intern("code");
  ws_names.reason = intern("reason");
  ws_names.subprotocol = intern("subprotocol");
  ws_names.subprotocols = intern("subprotocols");
  ws_names.scheme_ws = intern("ws");
  ws_names.scheme_wss = intern("wss");
  ws_names.http_response = intern("websocket.http.response");
  if (ws_names.websocket == nullptr || ws_names.connect == nullptr || ws_names.http_response == nullptr) return false;
  ws_names.connect_message = Py_BuildValue("{sO}", "type", ws_names.connect);
  return ws_names.connect_message != nullptr;
}

void start_websocket(AppServer &server, http::Exchange &conn, const http::RequestHead &head, PyObject *scope) {
  if (!make_websocket_scope(server, scope, head, conn)) {
    PyObject *exc = take_exception();
    server.log_exception("Cannot build the ASGI scope\n", exc);
    Py_XDECREF(exc);
    conn.fail();
    return;
  }
  auto *self = PyObject_New(WebSocketObject, &WebSocketType);
  if (self == nullptr) {
    log_app_exception(server);
    conn.fail();
    return;
  }
  new (&self->handshake_observer) HandshakeObserver(self);
  new (&self->session_observer) SessionObserver(self);
  new (&self->log_target) std::string();
  http::append_log_target(self->log_target, server.root_path_utf8, head.target);
  self->server = &server;
  self->conn = &conn;
  self->ws = nullptr;
  self->waiters = nullptr;
  self->send_waiters = nullptr;
  self->waiting_task = nullptr;
  self->unread = nullptr;
  self->denial_headers = nullptr;
  self->denial_body = nullptr;
  self->denial_status = 0;
  self->disconnect_code = ws::close_code::Abnormal;
  self->disconnect_reason = nullptr;
  self->connect_delivered = false;
  self->accepted = false;
  self->close_sent = false;
  self->disconnected = false;
  PyObject *op = reinterpret_cast<PyObject *>(self);

  PyObject *context = server.new_request_context();
  PyObject *coro = context == nullptr ? nullptr : call_app(server, op, &receive_def, &send_def, scope, context);
  if (coro == nullptr) {
    log_app_exception(server);
    self->conn = nullptr;
    Py_XDECREF(context);
    Py_DECREF(op);
    conn.fail();
    return;
  }
  // The exchange holds our reference until on_detach() (or, once accepted,
  // the WebSocket session does).
  conn.attach(&self->handshake_observer);
  PyObject *task = run_app(server, op, coro, context);
  Py_DECREF(coro);
  Py_DECREF(context);
  if (task == nullptr) {
    log_app_exception(server);
    if (self->conn != nullptr) self->conn->fail();
    return;
  }
  Py_DECREF(task);
}

void complete_websocket(PyObject *op, PyObject *exc, bool cancelled, PyObject *returned) {
  auto *self = reinterpret_cast<WebSocketObject *>(op);
  AppServer &server = *self->server;
  Py_CLEAR(self->waiting_task);  // (the task holds us: no cycle may outlive it)
  if (exc != nullptr && exc != Py_None) {
    if (self->disconnected && caused_by_disconnect(exc)) {
      server.log_exception("ASGI application ended by the client's disconnect\n", exc, "debug");
    } else {
      server.log_exception("Exception in ASGI application\n", exc);
    }
    // 500 if the handshake is still open (uvicorn sends none once the app
    // began a denial response: it only closes); 1011 on an open WebSocket.
    if (self->conn != nullptr && self->denial_headers == nullptr) log_rejected(500);
    if (self->conn != nullptr) self->conn->fail();
    if (self->ws != nullptr) self->ws->close(ws::close_code::InternalError, "");
    return;
  }
  if (cancelled) {
    if (self->conn != nullptr) self->conn->abort();
    if (self->ws != nullptr) self->ws->close(ws::close_code::InternalError, "");
    return;
  }
  if (self->conn != nullptr) {
    server.log_error("ASGI callable returned without completing handshake.");
    if (self->denial_headers == nullptr) log_rejected(500);
    self->conn->fail();
    return;
  }
  if (returned != nullptr && returned != Py_None) {
    PyObject *text = PyObject_Str(returned);
    const char *utf8 = text == nullptr ? nullptr : PyUnicode_AsUTF8(text);
    if (utf8 == nullptr) PyErr_Clear();
    std::string message = "ASGI callable should return None, but returned '";
    message += utf8 != nullptr ? utf8 : Py_TYPE(returned)->tp_name;
    message += "'.";
    Py_XDECREF(text);
    server.log_error(message.c_str());
  }
  // The app ended with the WebSocket open: a normal close.
  if (self->ws != nullptr) self->ws->close(ws::close_code::Normal, "");
}

}  // namespace pronghorn::bridge
