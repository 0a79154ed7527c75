// The ASGI bridge: runs the engine inside the worker's asyncio event loop and
// speaks ASGI 3 (www spec 2.4) to the application.
//
// Error convention in this layer: functions that return PyObject* return a
// new reference, or nullptr with a Python exception set.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/http/exchange.h"
#include "engine/http/forwarded.h"
#include "engine/net/tls.h"

namespace pronghorn::bridge {

// Interned strings and shared objects, created once at module init.
struct Names {
  PyObject *type, *http, *http_request, *http_disconnect, *body, *more_body, *status, *headers, *path;
  PyObject *http_response_start, *http_response_body, *http_response_pathsend;
  PyObject *asgi, *http_version, *server, *client, *scheme, *method, *root_path, *raw_path, *query_string, *state,
      *extensions;
  // The ASGI TLS extension's keys.
  PyObject *tls, *server_cert, *client_cert_chain, *client_cert_name, *client_cert_error, *tls_version, *cipher_suite;
  PyObject *v1_1, *v1_0, *scheme_http, *scheme_https, *empty_bytes, *empty_str;
  PyObject *asgi_template;        // {"version": "3.0", "spec_version": "2.3"} (uvicorn's)
  PyObject *asgi_template_2_4;    // {"version": "3.0", "spec_version": "2.4"} (--asgi-spec-version 2.4)
  PyObject *extensions_template;  // {"http.response.pathsend": {}}
  PyObject *disconnect_message;   // template {"type": "http.disconnect"}
  PyObject *client_disconnected;  // exception class, subclass of OSError
  PyObject *methods[9];           // GET POST PUT DELETE HEAD OPTIONS PATCH CONNECT TRACE
  PyObject *set_result, *set_exception, *done, *error, *exc_info;
};
extern Names names;

bool init_names();

// Takes the Python exception that is set (clearing it): the normalized
// exception object with its traceback attached, as a new reference.
PyObject *take_exception();

// ---- awaitable.cpp ----
extern PyTypeObject ReadyType;
void fill_ready_type();
// An awaitable that finishes at once with `value` (stolen), without an asyncio Future.
PyObject *ready(PyObject *value);
PyObject *ready_none();
// The 'type' of a message the app sends (borrowed), or nullptr with an
// exception: TypeError for a non-dict, `missing` when there is no 'type' (as
// uvicorn: RuntimeError for HTTP, KeyError('type') for WebSockets),
// RuntimeError for a type that is not a str.
PyObject *message_type(PyObject *message, PyObject *missing);

// ---- supervise.cpp ----
PyObject *py_supervise(PyObject *, PyObject *options);
PyObject *py_bind_tcp(PyObject *, PyObject *args);
PyObject *py_bind_unix(PyObject *, PyObject *args);
PyObject *py_sd_notify(PyObject *, PyObject *arg);
// In a worker of a supervisor with --metrics: the worker's slot in the shared
// counters (engine/metrics.h); nullptr otherwise.
metrics::WorkerSlot *worker_metrics_slot();

// ---- request.cpp ----
struct AppServer;
extern PyTypeObject RequestType;
// Creates the request object for an exchange, attaches it to the connection
// and starts the application task. Errors are handled inside (500).
void start_request(AppServer &server, http::Exchange &exchange, PyObject *scope);
bool init_request_type();
// What the server does when the app's coroutine for `request` (a Request
// object) has ended: with exception `exc` (or nullptr), cancelled, or normally
// with the value `returned` (borrowed; nullptr or None when it returned None).
void complete_request(PyObject *request, PyObject *exc, bool cancelled, PyObject *returned = nullptr);
// The engine serving `request` (a Request object).
Engine &request_engine(PyObject *request);
// Ends a step of the engine (Engine::end_step) around which an app's step
// ran: sending held heads may call back into Python (a close resolves the
// app's Futures), so the app's pending exception, if any, is kept aside.
inline void end_app_step(Engine &engine) {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  engine.end_step();
  PyErr_Restore(type, value, tb);
}

// Logs the Python exception that is set as an error of the app.
void log_app_exception(AppServer &server);
// app(scope, receive, send) with receive/send bound to `owner` (a Request or
// WebSocket object), called in `context` (AppServer::new_request_context(),
// the one its task runs in: synchronous code in the call, such as a wrapper
// that sets a context variable, is then seen by the task and by no one else):
// the app's awaitable, or nullptr with an exception set.
PyObject *call_app(AppServer &server, PyObject *owner, PyMethodDef *receive_def, PyMethodDef *send_def, PyObject *scope,
                   PyObject *context);
// Fills `out` with views into the bytes of an ASGI header list (None or
// absent: none). `*keep` receives the sequence that owns them: the caller
// releases it only after the views are used.
bool parse_headers(PyObject *headers, http::HeaderList &out, PyObject **keep);
// Starts the app's awaitable for `owner` (a Request or WebSocket object,
// completed through complete_request() when it ends) in a task running in
// `context` (the one call_app was given). New reference to the task, or
// nullptr with an exception set when nothing was started.
PyObject *run_app(AppServer &server, PyObject *owner, PyObject *awaitable, PyObject *context);
// True when `exc` is, or was caused by, the ClientDisconnected of our send().
bool caused_by_disconnect(PyObject *exc, int depth = 0);

// ---- websocket.cpp ----
extern PyTypeObject WebSocketType;
bool init_websocket_type();
// Serves a WebSocket handshake (head.websocket) with the app: builds the
// websocket scope from `http_scope` and starts the app. Errors are handled
// inside (500).
void start_websocket(AppServer &server, http::Exchange &exchange, const http::RequestHead &head, PyObject *http_scope);
void complete_websocket(PyObject *websocket, PyObject *exc, bool cancelled, PyObject *returned);
Engine &websocket_engine(PyObject *websocket);

// ---- task.cpp ----
// The RequestTask running now on `loop` (borrowed), or nullptr.
PyObject *running_request_task(PyObject *loop);
// Resolves `future` with `value`. When `task` (a RequestTask, or nullptr)
// waits on exactly this Future and no task runs on its loop, the task's next
// step runs now, within this call, instead of a pass of the event loop later
// (what asyncio's done callbacks cost: a WebSocket message's round trip).
// False when the Future was no longer pending (cancelled).
bool resolve_and_resume(PyObject *task, PyObject *future, PyObject *value);
bool init_task_type();
// True when this Python lets the request task register as asyncio's current task.
bool request_tasks_available();
// Creates the task that runs `coro` (a native coroutine) for `request`, in
// `context` (or a copy of the current one when nullptr), adds it to the
// server's task set and runs its first step now (or on the next loop pass
// when another task is running). New reference, or nullptr with an exception
// set when the task could not be created (the coroutine did not start).
PyObject *start_request_task(AppServer &server, PyObject *request, PyObject *coro, PyObject *context);

// The Python-facing server: owns the engine and what ASGI needs.
struct AppServer final : public RequestDispatcher {
  explicit AppServer(EngineConfig config) : engine(std::move(config)) {}
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override;
  PyObject *build_scope(http::Exchange &exchange, const http::RequestHead &head);
  bool init_scope_template();
  // The `server` tuple for a connection accepted on `local` (new reference).
  PyObject *server_tuple(const SocketAddress &local);
  // Error lines of the app's exchanges. The buffered access log is written
  // first, so that a terminal shows an access line before a later traceback.
  void log_exception(const char *message, PyObject *exc, const char *level = "error");
  void log_error(const char *message);

  Engine engine;
  PyObject *app = nullptr;
  PyObject *loop = nullptr;
  PyObject *create_task = nullptr;    // bound loop.create_task
  PyObject *create_future = nullptr;  // bound loop.create_future
  PyObject *state = nullptr;          // lifespan state dict, or nullptr
  PyObject *logger = nullptr;         // logging.Logger for errors
  PyObject *tasks = nullptr;          // set of running tasks
  PyObject *root_path = nullptr;      // str
  std::string root_path_utf8;
  // The context the server was made in (what its loop callbacks run in).
  // Each request's task starts in a copy of it, or in an empty context with
  // --reset-contextvars: never in a copy of whatever context is current when
  // the request is read (a pipelined request is read inside the previous
  // request's send, or from a callback another task scheduled).
  PyObject *server_context = nullptr;
  bool reset_contextvars = false;
  // A new context for a request's task (see server_context); new reference,
  // or nullptr with an exception set.
  PyObject *new_request_context() const { return reset_contextvars ? PyContext_New() : PyContext_Copy(server_context); }
  PyObject *access_logger = nullptr;       // logging.Logger, when the user configured logging
  PyObject *scope_template = nullptr;      // every scope key, copied per request
  PyObject *server_tuple_cache = nullptr;  // the last `server` tuple built ...
  SocketAddress server_tuple_address;      // ... and the address it is for
  bool request_tasks = false;              // run requests in RequestTask (task.cpp), not asyncio.Task
  // ASGI spec 2.4 (--asgi-spec-version 2.4): send() after the client left
  // raises ClientDisconnected. With 2.3 (the default, uvicorn's) it returns
  // and the message is dropped, except for a stream the server cut to stop.
  bool spec_2_4 = false;
  bool pathsend = false;            // offer http.response.pathsend (--asgi-pathsend)
  bool tls = false;                 // the listeners speak TLS (scope: https, the TLS extension)
  PyObject *server_cert = nullptr;  // PEM of the TLS certificate (str), for the TLS extension
  PyObject *tls_extensions(const TlsInfo &tls);
  PyObject *call_soon = nullptr;       // bound loop.call_soon
  PyObject *flush_callback = nullptr;  // sends held response heads (engine.flush_held_heads)
  bool proxy_headers = false;
  http::ForwardedTrust forwarded;  // --forwarded-allow-ips
};

}  // namespace pronghorn::bridge
