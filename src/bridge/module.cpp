// pronghorn._core: the Server type (the engine registered with the asyncio
// loop through add_reader on its epoll fd) and ASGI scope building.
#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "bridge/bridge.h"
#include "bridge/options.h"
#include "engine/http/forwarded.h"
#include "engine/http/target.h"
#include "engine/http1/response.h"
#include "engine/log.h"
#include "engine/net/listener.h"
#include "engine/net/tls.h"
#include "engine/ws/frame.h"

namespace pronghorn::bridge {

Names names;

namespace {

PyObject *intern(const char *s) {
  return PyUnicode_InternFromString(s);
}

// Header names repeat across requests: keep one bytes object per name, up to
// a bound so that a client sending random names cannot grow it forever.
std::unordered_map<std::string, PyObject *> header_name_cache;
constexpr size_t kHeaderNameCacheMax = 512;

PyObject *header_name(std::string_view name) {
  auto it = header_name_cache.find(std::string(name));
  if (it != header_name_cache.end()) return Py_NewRef(it->second);
  PyObject *bytes = PyBytes_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
  if (bytes != nullptr && header_name_cache.size() < kHeaderNameCacheMax)
    header_name_cache.emplace(std::string(name), Py_NewRef(bytes));
  return bytes;
}

// Percent-decodes like urllib.parse.unquote: invalid escapes stay as they are,
// the bytes are decoded as UTF-8 with U+FFFD for invalid sequences.
PyObject *decode_path(std::string_view prefix, std::string_view raw) {
  std::string out(prefix);
  out.reserve(prefix.size() + raw.size());
  http::append_percent_decoded(out, raw);
  return PyUnicode_DecodeUTF8(out.data(), static_cast<Py_ssize_t>(out.size()), "replace");
}

PyObject *http_version_object(std::string_view version) {
  if (version == "1.0") return Py_NewRef(names.v1_0);
  if (version == "1.1") return Py_NewRef(names.v1_1);
  return PyUnicode_FromStringAndSize(version.data(), static_cast<Py_ssize_t>(version.size()));
}

PyObject *method_object(std::string_view method) {
  static const char *const kMethods[] = {"GET",     "POST",  "PUT",     "DELETE", "HEAD",
                                         "OPTIONS", "PATCH", "CONNECT", "TRACE"};
  for (int i = 0; i < 9; ++i)
    if (method == kMethods[i]) return Py_NewRef(names.methods[i]);
  return PyUnicode_DecodeLatin1(method.data(), static_cast<Py_ssize_t>(method.size()), nullptr);
}

PyObject *address_tuple(const SocketAddress &addr) {
  if (addr.is_unix) {
    if (addr.host.empty()) Py_RETURN_NONE;
    PyObject *path = PyUnicode_DecodeFSDefaultAndSize(addr.host.data(), static_cast<Py_ssize_t>(addr.host.size()));
    if (path == nullptr) return nullptr;
    PyObject *pair = PyTuple_Pack(2, path, Py_None);
    Py_DECREF(path);
    return pair;
  }
  // Built directly (not with Py_BuildValue): this runs for every request.
  PyObject *host = PyUnicode_DecodeASCII(addr.host.data(), static_cast<Py_ssize_t>(addr.host.size()), nullptr);
  PyObject *port = host == nullptr ? nullptr : PyLong_FromLong(addr.port);
  PyObject *pair = port == nullptr ? nullptr : PyTuple_Pack(2, host, port);
  Py_XDECREF(host);
  Py_XDECREF(port);
  return pair;
}

}  // namespace

bool init_names() {
#define I(field, text) \
  if ((names.field = intern(text)) == nullptr) return false;
  I(type, "type")
  I(http, "http")
  I(http_request, "http.request")
  I(http_disconnect, "http.disconnect")
  I(body, "body")
  I(more_body, "more_body")
  I(status, "status")
  I(headers, "headers")
  I(path, "path")
  I(http_response_start, "http.response.start")
  I(http_response_body, "http.response.body")
  I(http_response_pathsend, "http.response.pathsend")
  I(asgi, "asgi")
  I(http_version, "http_version")
  I(server, "server")
  I(client, "client")
  I(scheme, "scheme")
  I(method, "method")
  I(root_path, "root_path")
  I(raw_path, "raw_path")
  I(query_string, "query_string")
  I(state, "state")
  I(extensions, "extensions")
  I(tls, "tls")
  I(server_cert, "server_cert")
  I(client_cert_chain, "client_cert_chain")
  I(client_cert_name, "client_cert_name")
  I(client_cert_error, "client_cert_error")
  I(tls_version, "tls_version")
  I(cipher_suite, "cipher_suite")
  I(v1_1, "1.1")
  I(v1_0, "1.0")
  I(scheme_http, "http")
  I(scheme_https, "https")
  I(empty_str, "")
  I(set_result, "set_result")
  I(set_exception, "set_exception")
  I(done, "done")
  I(error, "error")
  I(exc_info, "exc_info")
#undef I
  static const char *const kMethods[] = {"GET",     "POST",  "PUT",     "DELETE", "HEAD",
                                         "OPTIONS", "PATCH", "CONNECT", "TRACE"};
  for (int i = 0; i < 9; ++i)
    if ((names.methods[i] = intern(kMethods[i])) == nullptr) return false;
  names.empty_bytes = PyBytes_FromStringAndSize("", 0);
  names.asgi_template = Py_BuildValue("{ssss}", "version", "3.0", "spec_version", "2.3");
  names.asgi_template_2_4 = Py_BuildValue("{ssss}", "version", "3.0", "spec_version", "2.4");
  names.extensions_template = Py_BuildValue("{s{}}", "http.response.pathsend");
  names.disconnect_message = Py_BuildValue("{sO}", "type", names.http_disconnect);
  return names.empty_bytes && names.asgi_template && names.asgi_template_2_4 && names.extensions_template &&
         names.disconnect_message;
}

PyObject *take_exception() {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != nullptr && tb != nullptr) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
}

void AppServer::log_exception(const char *message, PyObject *exc, const char *level) {
  engine.flush_log();
  PyObject *msg = PyUnicode_FromString(message);
  PyObject *kwargs = Py_BuildValue("{sO}", "exc_info", exc != nullptr ? exc : Py_True);
  PyObject *error = msg && kwargs ? PyObject_GetAttrString(logger, level) : nullptr;
  PyObject *r = nullptr;
  if (error != nullptr) {
    PyObject *args = PyTuple_Pack(1, msg);
    if (args != nullptr) r = PyObject_Call(error, args, kwargs);
    Py_XDECREF(args);
  }
  if (r == nullptr) PyErr_WriteUnraisable(logger);
  Py_XDECREF(r);
  Py_XDECREF(error);
  Py_XDECREF(kwargs);
  Py_XDECREF(msg);
}

void AppServer::log_error(const char *message) {
  engine.flush_log();
  PyObject *r = PyObject_CallMethod(logger, "error", "s", message);
  if (r == nullptr) PyErr_WriteUnraisable(logger);
  Py_XDECREF(r);
}

PyObject *AppServer::build_scope(http::Exchange &exchange, const http::RequestHead &head) {
  http::TargetParts target = http::split_target(head.target);
  std::string_view raw_path = target.path, query = target.query;

  // A copy of the template has every key already (a fast clone of its
  // table); setting them below replaces values without growing the dict.
  PyObject *scope = PyDict_Copy(scope_template);
  if (scope == nullptr) return nullptr;
  auto set = [scope](PyObject *key, PyObject *value) {
    if (value == nullptr) return false;
    int rc = PyDict_SetItem(scope, key, value);
    Py_DECREF(value);
    return rc == 0;
  };
  bool ok = set(names.asgi, PyDict_Copy(spec_2_4 ? names.asgi_template_2_4 : names.asgi_template)) &&
            (head.http_version == "1.1" || set(names.http_version, http_version_object(head.http_version))) &&
            set(names.method, method_object(head.method)) && set(names.path, decode_path(root_path_utf8, raw_path));
  if (ok) {
    PyObject *raw = nullptr;
    if (root_path_utf8.empty()) {
      raw = PyBytes_FromStringAndSize(raw_path.data(), static_cast<Py_ssize_t>(raw_path.size()));
    } else {
      std::string full_raw(root_path_utf8);
      full_raw.append(raw_path);
      raw = PyBytes_FromStringAndSize(full_raw.data(), static_cast<Py_ssize_t>(full_raw.size()));
    }
    ok = set(names.raw_path, raw) &&
         (query.empty() ||
          set(names.query_string, PyBytes_FromStringAndSize(query.data(), static_cast<Py_ssize_t>(query.size()))));
  }
  std::string_view forwarded_for, forwarded_proto;
  PyObject *headers = ok ? PyList_New(static_cast<Py_ssize_t>(head.headers.size())) : nullptr;
  if (headers != nullptr) {
    Py_ssize_t i = 0;
    for (const http::Header &h : head.headers) {
      if (proxy_headers) {
        if (h.name == "x-forwarded-for")
          forwarded_for = h.value;
        else if (h.name == "x-forwarded-proto")
          forwarded_proto = h.value;
      }
      PyObject *name = header_name(h.name);
      PyObject *value = PyBytes_FromStringAndSize(h.value.data(), static_cast<Py_ssize_t>(h.value.size()));
      PyObject *pair = name && value ? PyTuple_Pack(2, name, value) : nullptr;
      Py_XDECREF(name);
      Py_XDECREF(value);
      if (pair == nullptr) {
        Py_CLEAR(headers);
        break;
      }
      PyList_SET_ITEM(headers, i++, pair);
    }
  }
  ok = ok && set(names.headers, headers);

  // Proxy headers count only when the direct peer is trusted.
  const TlsInfo *tls = exchange.tls();
  PyObject *scheme = Py_NewRef(tls != nullptr ? names.scheme_https : names.scheme_http);
  PyObject *client = nullptr;
  if (ok && proxy_headers && (!forwarded_for.empty() || !forwarded_proto.empty()) &&
      forwarded.trusted(exchange.peer())) {
    // As uvicorn: a trusted proxy's X-Forwarded-Proto is the scheme, either way.
    if (http::ForwardedTrust::secure_proto(forwarded_proto))
      Py_SETREF(scheme, Py_NewRef(names.scheme_https));
    else if (http::ForwardedTrust::plain_proto(forwarded_proto))
      Py_SETREF(scheme, Py_NewRef(names.scheme_http));
    std::string_view chosen = forwarded.client(forwarded_for);
    if (!chosen.empty()) {
      client = Py_BuildValue("(s#i)", chosen.data(), static_cast<Py_ssize_t>(chosen.size()), 0);
      exchange.set_log_client(chosen);  // the access line names the same client as the scope
    }
  }
  if (client == nullptr) client = address_tuple(exchange.peer());
  if (!ok) {
    Py_XDECREF(scheme);
    Py_XDECREF(client);
    Py_DECREF(scope);
    return nullptr;
  }
  // set() consumes its value: call both, then combine.
  bool scheme_set = scheme == names.scheme_http ? (Py_DECREF(scheme), true) : set(names.scheme, scheme);
  bool client_set = set(names.client, client);
  ok = scheme_set && client_set && set(names.server, server_tuple(exchange.local())) &&
       (tls != nullptr ? set(names.extensions, tls_extensions(*tls))
                       : (!pathsend || set(names.extensions, PyDict_Copy(names.extensions_template))));
  if (!ok) {
    Py_DECREF(scope);
    return nullptr;
  }
  if (state != nullptr && !set(names.state, PyDict_Copy(state))) {
    Py_DECREF(scope);
    return nullptr;
  }
  return scope;
}

// The scope's extensions over TLS: the ASGI TLS extension, and pathsend
// when offered. New reference.
PyObject *AppServer::tls_extensions(const TlsInfo &tls) {
  PyObject *extensions = pathsend ? PyDict_Copy(names.extensions_template) : PyDict_New();
  PyObject *chain = extensions == nullptr ? nullptr : PyList_New(0);
  if (chain == nullptr) {
    Py_XDECREF(extensions);
    return nullptr;
  }
  bool ok = true;
  for (const std::string &pem : tls.client_cert_chain) {
    PyObject *item = PyUnicode_FromStringAndSize(pem.data(), static_cast<Py_ssize_t>(pem.size()));
    ok = ok && item != nullptr && PyList_Append(chain, item) == 0;
    Py_XDECREF(item);
  }
  auto text_or_none = [](const std::string &s) {
    return s.empty() ? Py_NewRef(Py_None) : PyUnicode_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size()));
  };
  // Built with the interned keys: Py_BuildValue made each key string anew
  // and parsed its format, about 7,100 instructions per request against
  // 2,400 this way (callgrind, performance.md).
  PyObject *info = ok ? PyDict_New() : nullptr;
  auto put = [&](PyObject *key, PyObject *value) {  // steals value
    if (info != nullptr && (value == nullptr || PyDict_SetItem(info, key, value) < 0)) Py_CLEAR(info);
    Py_XDECREF(value);
  };
  put(names.server_cert, Py_NewRef(server_cert ? server_cert : Py_None));
  put(names.client_cert_chain, Py_NewRef(chain));
  put(names.client_cert_name, text_or_none(tls.client_cert_name));
  put(names.client_cert_error, text_or_none(tls.client_cert_error));
  put(names.tls_version, PyLong_FromLong(tls.version));
  put(names.cipher_suite, PyLong_FromLong(tls.cipher_suite));
  Py_DECREF(chain);
  if (info == nullptr || PyDict_SetItem(extensions, names.tls, info) < 0) {
    Py_XDECREF(info);
    Py_DECREF(extensions);
    return nullptr;
  }
  Py_DECREF(info);
  return extensions;
}

bool AppServer::init_scope_template() {
  // The keys in the order of the scope; values set per request are None here.
  scope_template = PyDict_New();
  if (scope_template == nullptr) return false;
  PyObject *const entries[][2] = {{names.type, names.http},         {names.asgi, Py_None},
                                  {names.http_version, names.v1_1}, {names.method, Py_None},
                                  {names.root_path, root_path},     {names.path, Py_None},
                                  {names.raw_path, Py_None},        {names.query_string, names.empty_bytes},
                                  {names.headers, Py_None},         {names.scheme, names.scheme_http},
                                  {names.client, Py_None},          {names.server, Py_None}};
  for (const auto &entry : entries)
    if (PyDict_SetItem(scope_template, entry[0], entry[1]) < 0) return false;
  // uvicorn's scope has no "extensions": it is there only with pathsend on.
  if ((pathsend || tls) && PyDict_SetItem(scope_template, names.extensions, Py_None) < 0) return false;
  if (state != nullptr && PyDict_SetItem(scope_template, names.state, Py_None) < 0) return false;
  return true;
}

PyObject *AppServer::server_tuple(const SocketAddress &local) {
  // Connections share their listener's address: keep its tuple (immutable).
  if (server_tuple_cache == nullptr || local.is_unix != server_tuple_address.is_unix ||
      local.port != server_tuple_address.port || local.host != server_tuple_address.host) {
    PyObject *tuple = address_tuple(local);
    if (tuple == nullptr) return nullptr;
    Py_XSETREF(server_tuple_cache, tuple);
    server_tuple_address = local;
  }
  return Py_NewRef(server_tuple_cache);
}

void AppServer::on_request(http::Exchange &exchange, const http::RequestHead &head) {
  PyObject *scope = build_scope(exchange, head);
  if (scope == nullptr) {
    PyObject *exc = take_exception();
    log_exception("Cannot build the ASGI scope\n", exc);
    Py_XDECREF(exc);
    exchange.fail();
    return;
  }
  if (head.websocket != nullptr)
    start_websocket(*this, exchange, head, scope);
  else
    start_request(*this, exchange, scope);
  Py_DECREF(scope);
}

// ---------------------------------------------------------------- Server type

namespace {

struct ServerObject {
  PyObject_HEAD AppServer *server;
  PyObject *poll_callback;
};

AppServer *get(ServerObject *self) {
  if (self->server == nullptr) PyErr_SetString(PyExc_RuntimeError, "server is closed");
  return self->server;
}

int server_traverse(PyObject *op, visitproc visit, void *arg) {
  auto *self = reinterpret_cast<ServerObject *>(op);
  Py_VISIT(self->poll_callback);
  if (self->server != nullptr) {
    AppServer &s = *self->server;
    Py_VISIT(s.app);
    Py_VISIT(s.loop);
    Py_VISIT(s.create_task);
    Py_VISIT(s.create_future);
    Py_VISIT(s.state);
    Py_VISIT(s.logger);
    Py_VISIT(s.tasks);
    Py_VISIT(s.server_context);
    Py_VISIT(s.access_logger);
    Py_VISIT(s.scope_template);
    Py_VISIT(s.call_soon);
    Py_VISIT(s.flush_callback);
  }
  return 0;
}

void release(AppServer *s) {
  Py_CLEAR(s->app);
  Py_CLEAR(s->loop);
  Py_CLEAR(s->create_task);
  Py_CLEAR(s->create_future);
  Py_CLEAR(s->state);
  Py_CLEAR(s->logger);
  Py_CLEAR(s->tasks);
  Py_CLEAR(s->root_path);
  Py_CLEAR(s->server_context);
  Py_CLEAR(s->access_logger);
  Py_CLEAR(s->scope_template);
  Py_CLEAR(s->server_tuple_cache);
  Py_CLEAR(s->call_soon);
  Py_CLEAR(s->flush_callback);
  Py_CLEAR(s->server_cert);
}

int server_clear(PyObject *op) {
  auto *self = reinterpret_cast<ServerObject *>(op);
  Py_CLEAR(self->poll_callback);
  if (self->server != nullptr) release(self->server);
  return 0;
}

void server_dealloc(PyObject *op) {
  auto *self = reinterpret_cast<ServerObject *>(op);
  PyObject_GC_UnTrack(op);
  if (self->server != nullptr) {
    self->server->engine.close_all();
    self->server->engine.run_once(0);
    release(self->server);
    delete self->server;
    self->server = nullptr;
  }
  Py_CLEAR(self->poll_callback);
  Py_TYPE(op)->tp_free(op);
}

PyObject *server_new(PyTypeObject *type, PyObject *, PyObject *) {
  auto *self = reinterpret_cast<ServerObject *>(type->tp_alloc(type, 0));
  return reinterpret_cast<PyObject *>(self);
}

// TlsOptions from the dict server.py builds from the --ssl-* options:
// certfile, keyfile, password, ca_certs, ciphers (str), cert_reqs,
// min_version, max_version (int), alpn (list of str), ticket_secret (bytes).
bool tls_options_from(PyObject *spec, TlsOptions &options) {
  OptionReader read(spec, "tls");
  read.path("certfile", options.certfile);
  read.path("keyfile", options.keyfile);
  read.path("password", options.password);
  read.path("ca_certs", options.ca_certs);
  read.text("ciphers", options.ciphers);
  read.path("ticket_secret", options.ticket_secret);
  long long cert_reqs = options.cert_reqs, min_version = options.min_version, max_version = options.max_version;
  read.integer("cert_reqs", cert_reqs);
  read.integer("min_version", min_version);
  read.integer("max_version", max_version);
  read.text_list("alpn", options.alpn);
  if (!read.finish()) return false;
  options.cert_reqs = static_cast<int>(cert_reqs);
  options.min_version = static_cast<int>(min_version);
  options.max_version = static_cast<int>(max_version);
  return true;
}

std::unique_ptr<TlsContext> make_tls_context(PyObject *spec) {
  TlsOptions options;
  if (!tls_options_from(spec, options)) return nullptr;
  std::string error;
  std::unique_ptr<TlsContext> context = TlsContext::create(options, error);
  if (context == nullptr) PyErr_SetString(PyExc_ValueError, error.c_str());
  return context;
}

// Sends the response heads still held when the event loop's step that
// started them ended, and reads the input TLS streams hold for sessions that
// read again (Engine::defer_readable); scheduled with call_soon by schedule_flush.
PyObject *server_flush_heads(PyObject *op, PyObject *) {
  AppServer *s = reinterpret_cast<ServerObject *>(op)->server;
  if (s != nullptr) s->engine.run_scheduled();
  // It dispatches requests now (reads deferred by TLS): as _poll, an error
  // left set must surface here, not as a SystemError later.
  if (PyErr_Occurred()) return nullptr;
  Py_RETURN_NONE;
}

PyMethodDef flush_heads_def = {"_flush_heads", server_flush_heads, METH_NOARGS, nullptr};

// A response head was held outside any step the bridge brackets (an app's
// own task sent http.response.start): send it when this pass of the loop's
// ready callbacks is over.
void schedule_flush(void *ctx) {
  auto *s = static_cast<AppServer *>(ctx);
  PyObject *r = PyObject_CallOneArg(s->call_soon, s->flush_callback);
  if (r == nullptr) {
    PyErr_WriteUnraisable(s->call_soon);
    s->engine.flush_held_heads();  // no loop to come back: send them now
  }
  Py_XDECREF(r);
}

// Access records through the user's `pronghorn.access` logger, with uvicorn's
// message and arguments so that formatters written for uvicorn work.
// --access-log-format with a logging configuration: the rendered line is the
// record's message.
void access_line_hook(void *ctx, std::string_view line) {
  auto *s = static_cast<AppServer *>(ctx);
  // Header bytes need not be UTF-8 (a client's choice): never a reason to
  // lose the line.
  PyObject *text = PyUnicode_DecodeUTF8(line.data(), static_cast<Py_ssize_t>(line.size()), "backslashreplace");
  PyObject *r = text == nullptr ? nullptr : PyObject_CallMethod(s->access_logger, "info", "sO", "%s", text);
  Py_XDECREF(text);
  if (r == nullptr) PyErr_WriteUnraisable(s->access_logger);
  Py_XDECREF(r);
}

void access_hook(void *ctx, const SocketAddress &peer, std::string_view method, std::string_view target,
                 std::string_view http_version, int status) {
  auto *s = static_cast<AppServer *>(ctx);
  std::string client = peer.is_unix ? std::string("unix socket") : peer.host + ":" + std::to_string(peer.port);
  PyObject *r = PyObject_CallMethod(s->access_logger, "info", "sss#s#si", "%s - \"%s %s HTTP/%s\" %d", client.c_str(),
                                    method.data(), static_cast<Py_ssize_t>(method.size()), target.data(),
                                    static_cast<Py_ssize_t>(target.size()), std::string(http_version).c_str(), status);
  if (r == nullptr) PyErr_WriteUnraisable(s->access_logger);
  Py_XDECREF(r);
}

bool parse_trusted(AppServer &s, const char *spec) {
  std::string error;
  std::vector<std::string> ignored;
  if (!s.forwarded.parse(spec, error, ignored)) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return false;
  }
  // uvicorn accepts host names here too; they never match a peer address.
  for (const std::string &item : ignored)
    log(LogLevel::Warning, "forwarded-allow-ips: ignoring '%s', not an IP address or network", item.c_str());
  return true;
}

// The WebSocket options: None (WebSockets off, --ws none) or a dict of
// max_size, max_queue, ping_interval, ping_timeout (seconds, None: off) and
// per_message_deflate.
// None (--ws none): upgrade requests are answered as plain HTTP requests.
bool parse_ws_settings(PyObject *ws, ws::Settings &out) {
  out.enabled = ws != nullptr;
  if (ws == nullptr) return true;
  OptionReader read(ws, "ws");
  read.count("max_size", out.max_message);
  uint64_t max_queue = out.max_queue;
  read.count("max_queue", max_queue);
  // None or absent: no pings (uvicorn takes None).
  out.ping_interval_ms = out.ping_timeout_ms = 0;
  read.milliseconds("ping_interval", out.ping_interval_ms);
  read.milliseconds("ping_timeout", out.ping_timeout_ms);
  read.flag("per_message_deflate", out.per_message_deflate);
  if (!read.finish()) return false;
  if (out.max_message < 1 || max_queue < 1) {
    PyErr_SetString(PyExc_ValueError, "invalid WebSocket limits");
    return false;
  }
  out.max_queue = static_cast<size_t>(max_queue);
  return true;
}

// The static-file options: None (off) or a dict of "routes" and "mounts"
// (lists of str, paired in match order) and "expires" (seconds; None or 0:
// no Cache-Control/Expires).
bool parse_static_files(PyObject *spec, static_files::Config &out) {
  if (spec == nullptr || spec == Py_None) return true;
  OptionReader read(spec, "static_files");
  std::vector<std::string> routes, mounts;
  read.text_list("routes", routes);
  read.text_list("mounts", mounts);
  uint64_t expires = 0;
  read.count("expires", expires);
  if (!read.finish()) return false;
  if (routes.size() != mounts.size()) {
    PyErr_SetString(PyExc_ValueError, "static_files: routes and mounts must be given in pairs");
    return false;
  }
  for (size_t i = 0; i < routes.size(); ++i) out.mounts.emplace_back(routes[i], mounts[i]);
  out.expires_s = expires > 0 ? static_cast<int64_t>(expires) : -1;
  return true;
}

// Server(app, loop, logger, options): `options` is the dict that server.py
// builds from config.py's OPTIONS table (the options marked for the engine,
// by their names) and the values it works out for this worker.
int server_init(PyObject *op, PyObject *args, PyObject *kwargs) {
  auto *self = reinterpret_cast<ServerObject *>(op);
  static const char *kwlist[] = {"app", "loop", "logger", "options", nullptr};
  PyObject *app, *loop, *logger, *options = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O", const_cast<char **>(kwlist), &app, &loop, &logger, &options))
    return -1;
  if (self->server != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "Server already initialised");
    return -1;
  }
  EngineConfig config;
  OptionReader read(options, "engine");
  read.text("root_path", config.root_path);
  read.milliseconds("timeout_keep_alive", config.keep_alive_timeout_ms);
  read.milliseconds("timeout_header_read", config.header_timeout_ms);
  uint64_t limit_concurrency = 0, limit_line = config.limits.max_request_line, limit_head = config.limits.max_head,
           limit_fields = config.limits.max_headers;
  read.count("limit_concurrency", limit_concurrency);
  read.count("limit_request_line", limit_line);
  read.count("limit_request_head", limit_head);
  read.count("limit_request_fields", limit_fields);
  read.flag("server_header", config.server_header);
  read.flag("date_header", config.date_header);
  read.flag("access_log", config.access_log);
  read.flag("access_log_colours", config.access_log_colours);
  long long control_fd = -1;
  read.integer("control_fd", control_fd);
  read.count("max_requests", config.max_requests);
  read.flag("send_thread", config.send_thread);
  bool send_thread_always = false, proxy_headers = false, reset_ctx = false, asyncio_tasks = false, pathsend = false;
  read.flag("send_thread_always", send_thread_always);
  read.flag("proxy_headers", proxy_headers);
  read.flag("reset_contextvars", reset_ctx);
  read.flag("asyncio_tasks", asyncio_tasks);
  read.flag("asgi_pathsend", pathsend);
  std::string spec_version = "2.3", forwarded = "127.0.0.1", access_log_format;
  read.text("asgi_spec_version", spec_version);
  read.text("forwarded_allow_ips", forwarded);
  read.text("access_log_format", access_log_format);
  PyObject *state = read.object("state"), *headers = read.object("headers"),
           *access_logger = read.object("access_logger");
  uint64_t h2_streams = config.http2.max_concurrent_streams, h2_window = config.http2.initial_window_size,
           h2_frame = config.http2.max_frame_size, h2_header_list = config.http2.max_header_list_size;
  read.flag("http2", config.http2.enabled);
  read.count("http2_max_concurrent_streams", h2_streams);
  read.count("http2_initial_window_size", h2_window);
  read.count("http2_max_frame_size", h2_frame);
  read.count("http2_max_header_list_size", h2_header_list);
  read.milliseconds("http2_keep_alive_interval", config.http2.keep_alive_interval_ms);
  PyObject *tls = read.object("tls"), *ws = read.object("ws"), *static_spec = read.object("static_files");
  bool metrics = false;
  read.flag("metrics", metrics);
  if (!read.finish()) return -1;
  // RFC 9113 §6.5.2's ranges (config.py checks them for the command line).
  if (h2_streams < 1 || h2_streams > 0x7fffffff || h2_window < 1 || h2_window > 0x7fffffff || h2_frame < 16384 ||
      h2_frame > 16777215 || h2_header_list < 1 || h2_header_list > 0x7fffffff) {
    PyErr_SetString(PyExc_ValueError, "invalid HTTP/2 settings");
    return -1;
  }
  config.http2.max_concurrent_streams = static_cast<uint32_t>(h2_streams);
  config.http2.initial_window_size = static_cast<uint32_t>(h2_window);
  config.http2.max_frame_size = static_cast<uint32_t>(h2_frame);
  config.http2.max_header_list_size = static_cast<uint32_t>(h2_header_list);
  std::unique_ptr<TlsContext> tls_context;
  if (tls != nullptr && (tls_context = make_tls_context(tls)) == nullptr) return -1;
  if (spec_version != "2.3" && spec_version != "2.4") {
    PyErr_Format(PyExc_ValueError, "asgi_spec_version must be '2.3' or '2.4', not '%s'", spec_version.c_str());
    return -1;
  }
  if (limit_line < 16 || limit_head < limit_line || limit_fields < 1) {
    PyErr_SetString(PyExc_ValueError, "invalid request limits");
    return -1;
  }
  config.limits.max_request_line = static_cast<size_t>(limit_line);
  config.limits.max_head = static_cast<size_t>(limit_head);
  config.limits.max_headers = static_cast<size_t>(limit_fields);
  config.limit_concurrency = static_cast<size_t>(limit_concurrency);
  config.control_fd = static_cast<int>(control_fd);
  // --metrics: counted in the slot the supervisor gave this worker (none
  // outside a supervisor: then nothing is counted).
  config.metrics = metrics ? worker_metrics_slot() : nullptr;
  if (send_thread_always) config.send_thread_min_request_ns = 0;
  if (!parse_ws_settings(ws, config.ws)) return -1;
  if (!parse_static_files(static_spec, config.static_files)) return -1;
  if (!access_log_format.empty()) {
    std::string error;
    auto format = http::AccessLogFormat::parse(access_log_format, &error);
    if (format == nullptr) {
      PyErr_Format(PyExc_ValueError, "--access-log-format: %s", error.c_str());
      return -1;
    }
    config.access_format = std::move(format);
  }
  if (headers != nullptr) {
    PyObject *seq = PySequence_Fast(headers, "headers must be a sequence of (name, value) pairs");
    if (seq == nullptr) return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
      const char *name, *value;
      if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ss", &name, &value)) {
        Py_DECREF(seq);
        return -1;
      }
      if (!http1::valid_header_name(name) || !http1::valid_header_value(value)) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "invalid header: %s: %s", name, value);
        return -1;
      }
      config.extra_headers.emplace_back(name, value);
    }
    Py_DECREF(seq);
  }

  auto *s = new AppServer(std::move(config));
  s->engine.set_dispatcher(s);
  s->app = Py_NewRef(app);
  s->loop = Py_NewRef(loop);
  s->logger = Py_NewRef(logger);
  s->state = state == nullptr ? nullptr : Py_NewRef(state);
  s->root_path = PyUnicode_FromStringAndSize(s->engine.config().root_path.data(),
                                             static_cast<Py_ssize_t>(s->engine.config().root_path.size()));
  s->root_path_utf8 = s->engine.config().root_path;
  s->proxy_headers = proxy_headers;
  s->spec_2_4 = spec_version == "2.4";
  s->pathsend = pathsend;
  s->tls = tls_context != nullptr;
  s->call_soon = PyObject_GetAttrString(loop, "call_soon");
  s->flush_callback = PyCFunction_New(&flush_heads_def, op);
  if (s->call_soon == nullptr || s->flush_callback == nullptr) {
    self->server = s;
    return -1;
  }
  s->engine.set_flush_scheduler(schedule_flush, s);
  s->create_task = PyObject_GetAttrString(loop, "create_task");
  s->create_future = PyObject_GetAttrString(loop, "create_future");
  s->tasks = PySet_New(nullptr);
  self->server = s;
  if (!s->root_path || !s->create_task || !s->create_future || !s->tasks || !s->init_scope_template()) return -1;
  // Pronghorn's request task unless asked for asyncio Tasks, or the loop has a
  // task factory (which only loop.create_task honours).
  if (!asyncio_tasks && request_tasks_available()) {
    PyObject *factory = PyObject_CallMethod(loop, "get_task_factory", nullptr);
    if (factory == nullptr) return -1;
    s->request_tasks = factory == Py_None;
    Py_DECREF(factory);
  }
  s->reset_contextvars = reset_ctx;
  if ((s->server_context = PyContext_CopyCurrent()) == nullptr) return -1;
  if (!parse_trusted(*s, forwarded.c_str())) return -1;
  if (access_logger != nullptr) {
    s->access_logger = Py_NewRef(access_logger);
    if (s->engine.config().access_format != nullptr)
      s->engine.set_access_line_hook(access_line_hook, s);
    else
      s->engine.set_access_hook(access_hook, s);
  }
  if (!s->engine.open()) {
    PyErr_SetString(PyExc_OSError, "cannot start the engine: its event loop or static file mounts (see the log)");
    return -1;
  }
  if (tls_context != nullptr) {
    s->server_cert = PyUnicode_FromString(tls_context->server_cert_pem().c_str());
    if (s->server_cert == nullptr) return -1;
    s->engine.set_tls(std::move(tls_context));
  }
  return 0;
}

PyObject *listen_result(AppServer *s, int fd) {
  if (fd < 0) {
    PyErr_SetString(PyExc_OSError, "cannot listen (see the log for the reason)");
    return nullptr;
  }
  if (!s->engine.add_listener(fd)) {
    PyErr_SetString(PyExc_OSError, "cannot watch the listening socket (see the log)");
    return nullptr;
  }
  return address_tuple(s->engine.listen_addresses().back());
}

PyObject *server_listen_tcp(PyObject *op, PyObject *args, PyObject *kwargs) {
  static const char *kwlist[] = {"host", "port", "backlog", "reuse_port", nullptr};
  const char *host;
  int port, backlog = 2048, reuse_port = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "si|ip", const_cast<char **>(kwlist), &host, &port, &backlog,
                                   &reuse_port))
    return nullptr;
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  return listen_result(s, listen_tcp(host, port, backlog, reuse_port));
}

PyObject *server_listen_unix(PyObject *op, PyObject *args) {
  const char *path;
  int backlog = 2048;
  if (!PyArg_ParseTuple(args, "s|i", &path, &backlog)) return nullptr;
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  return listen_result(s, listen_unix(path, backlog));
}

PyObject *server_listen_fd(PyObject *op, PyObject *arg) {
  int fd = PyLong_AsLong(arg);
  if (fd == -1 && PyErr_Occurred()) return nullptr;
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  return listen_result(s, adopt_listen_fd(fd));
}

PyObject *server_poll(PyObject *op, PyObject *) {
  AppServer *s = reinterpret_cast<ServerObject *>(op)->server;
  if (s != nullptr) s->engine.run_once(0);
  if (PyErr_Occurred()) return nullptr;
  Py_RETURN_NONE;
}

PyMethodDef poll_def = {"_poll", server_poll, METH_NOARGS, nullptr};

PyObject *server_start(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<ServerObject *>(op);
  AppServer *s = get(self);
  if (s == nullptr) return nullptr;
  if (self->poll_callback == nullptr) {
    self->poll_callback = PyCFunction_New(&poll_def, op);
    if (self->poll_callback == nullptr) return nullptr;
  }
  return PyObject_CallMethod(s->loop, "add_reader", "iO", s->engine.epoll_fd(), self->poll_callback);
}

PyObject *server_stop(PyObject *op, PyObject *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  return PyObject_CallMethod(s->loop, "remove_reader", "i", s->engine.epoll_fd());
}

// begin_shutdown(restart=False): `restart` when the worker is replaced while
// the server goes on (a reload, a recycle): open WebSockets get 1012 (service
// restart) instead of 1001 (going away).
PyObject *server_begin_shutdown(PyObject *op, PyObject *args) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  int restart = 0;
  if (!PyArg_ParseTuple(args, "|p", &restart)) return nullptr;
  s->engine.set_ws_stop_code(restart ? ws::close_code::ServiceRestart : ws::close_code::GoingAway);
  size_t websockets = s->engine.begin_shutdown();
  s->engine.run_once(0);
  return PyLong_FromSize_t(websockets);
}

PyObject *server_close_all(PyObject *op, PyObject *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  s->engine.close_all();
  s->engine.run_once(0);
  if (PyErr_Occurred()) return nullptr;
  Py_RETURN_NONE;
}

PyObject *server_cut_streams(PyObject *op, PyObject *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  size_t cut = s->engine.cut_streams();
  s->engine.run_once(0);
  if (PyErr_Occurred()) return nullptr;
  return PyLong_FromSize_t(cut);
}

PyObject *server_notify_ready(PyObject *op, PyObject *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  s->engine.notify_ready();
  Py_RETURN_NONE;
}

PyObject *server_get_tasks(PyObject *op, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  return PySet_New(s->tasks);
}

PyObject *server_get_connections(PyObject *op, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  return s ? PyLong_FromSize_t(s->engine.connection_count()) : nullptr;
}

PyObject *server_get_active(PyObject *op, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  return s ? PyLong_FromSize_t(s->engine.active_requests()) : nullptr;
}

PyObject *server_get_served(PyObject *op, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  return s ? PyLong_FromUnsignedLongLong(s->engine.requests_served()) : nullptr;
}

PyObject *server_get_state(PyObject *op, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return nullptr;
  if (s->state == nullptr) Py_RETURN_NONE;
  return Py_NewRef(s->state);
}

int server_set_state(PyObject *op, PyObject *value, void *) {
  AppServer *s = get(reinterpret_cast<ServerObject *>(op));
  if (s == nullptr) return -1;
  if (value != nullptr && value != Py_None && !PyDict_Check(value)) {
    PyErr_SetString(PyExc_TypeError, "state must be a dict");
    return -1;
  }
  Py_XSETREF(s->state, value == nullptr || value == Py_None ? nullptr : Py_NewRef(value));
  return 0;
}

PyMethodDef server_methods[] = {
    {"listen_tcp", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(server_listen_tcp)),
     METH_VARARGS | METH_KEYWORDS, "Bind and listen on host:port; returns the bound (host, port)."},
    {"listen_unix", server_listen_unix, METH_VARARGS, "Listen on a Unix domain socket."},
    {"listen_fd", server_listen_fd, METH_O, "Serve an inherited listening socket."},
    {"start", server_start, METH_NOARGS, "Register the engine with the asyncio loop."},
    {"stop", server_stop, METH_NOARGS, "Unregister the engine from the asyncio loop."},
    {"begin_shutdown", server_begin_shutdown, METH_VARARGS,
     "Stop accepting; close idle connections; returns how many WebSockets it began to close."},
    {"close_all", server_close_all, METH_NOARGS, "Close every connection now."},
    {"notify_ready", server_notify_ready, METH_NOARGS, "Tell the supervisor this worker is serving."},
    {"cut_streams", server_cut_streams, METH_NOARGS,
     "Graceful stop: end the responses of unknown length still streaming (the app gets http.disconnect); "
     "returns how many."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef server_getset[] = {
    {"tasks", server_get_tasks, nullptr, "Running application tasks (a copy).", nullptr},
    {"connection_count", server_get_connections, nullptr, "Open connections.", nullptr},
    {"active_requests", server_get_active, nullptr, "Requests whose response is not complete.", nullptr},
    {"requests_served", server_get_served, nullptr, "Requests received so far.", nullptr},
    {"state", server_get_state, server_set_state, "The lifespan state copied into each scope.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject ServerType{};

void fill_server_type() {
  // Filled at run time: C++ has no designated initializers for all of PyTypeObject's fields.
  ServerType.ob_base.ob_base.ob_refcnt = 1;
  ServerType.tp_name = "pronghorn._core.Server";
  ServerType.tp_basicsize = sizeof(ServerObject);
  ServerType.tp_dealloc = server_dealloc;
  ServerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  ServerType.tp_doc = "The HTTP engine serving one ASGI application inside an asyncio loop.";
  ServerType.tp_traverse = server_traverse;
  ServerType.tp_clear = server_clear;
  ServerType.tp_methods = server_methods;
  ServerType.tp_getset = server_getset;
  ServerType.tp_init = server_init;
  ServerType.tp_new = server_new;
}

PyObject *set_level(PyObject *, PyObject *arg) {
  long level = PyLong_AsLong(arg);
  if (level == -1 && PyErr_Occurred()) return nullptr;
  set_log_level(static_cast<LogLevel>(level));
  Py_RETURN_NONE;
}

PyObject *log_sink_callable = nullptr;

// The engine's log lines through a Python callable (the user's logging
// configuration). Only installed in serving processes, never in the supervisor.
void python_log_sink(LogLevel level, std::string_view message) {
  PyObject *r = PyObject_CallFunction(log_sink_callable, "is#", static_cast<int>(level), message.data(),
                                      static_cast<Py_ssize_t>(message.size()));
  if (r == nullptr) PyErr_WriteUnraisable(log_sink_callable);
  Py_XDECREF(r);
}

PyObject *set_sink(PyObject *, PyObject *arg) {
  if (arg == Py_None) {
    set_log_sink(nullptr);
    Py_CLEAR(log_sink_callable);
  } else {
    Py_XSETREF(log_sink_callable, Py_NewRef(arg));
    set_log_sink(python_log_sink);
  }
  Py_RETURN_NONE;
}

// _core.check_access_log_format(spec): ValueError (one line) for a format the
// engine would refuse, so that the command line says so before any worker.
PyObject *py_check_access_log_format(PyObject *, PyObject *arg) {
  const char *spec = PyUnicode_AsUTF8(arg);
  if (spec == nullptr) return nullptr;
  std::string error;
  if (http::AccessLogFormat::parse(spec, &error) == nullptr) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

// _core.check_tls(spec): builds the TLS context once, as a worker would, so
// that the parent can stop with a one-line error before any worker starts.
PyObject *py_check_tls(PyObject *, PyObject *spec) {
  std::unique_ptr<TlsContext> context = make_tls_context(spec);
  if (context == nullptr) return nullptr;
  Py_RETURN_NONE;
}

// _core.check_static(spec): checks the routes and opens the directories, as
// a worker would, so that a bad mount stops the server with one line before
// any worker starts.
PyObject *py_check_static(PyObject *, PyObject *spec) {
  static_files::Config config;
  if (!parse_static_files(spec, config)) return nullptr;
  if (config.mounts.empty()) Py_RETURN_NONE;
  std::string error;
  if (static_files::Handler::open(config, error) == nullptr) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef module_methods[] = {
    {"check_access_log_format", py_check_access_log_format, METH_O,
     "Raise ValueError (one line) for an --access-log-format the engine refuses."},
    {"check_tls", py_check_tls, METH_O, "Raise ValueError (one line) when the TLS options cannot make a context."},
    {"check_static", py_check_static, METH_O,
     "Raise ValueError (one line) when a static route is invalid or its directory cannot be opened."},
    {"set_log_sink", set_sink, METH_O,
     "Route the engine's log lines to a callable(level, message), or None for stderr."},
    {"set_log_level", set_level, METH_O, "Set the engine's log level (a logging module level number)."},
    {"supervise", py_supervise, METH_O,
     "Run the supervisor with a dict of options: returns the exit code in the parent, (fd, limit, listen fd) in a "
     "worker."},
    {"bind_tcp", py_bind_tcp, METH_VARARGS, "Bind and listen; returns (fd, host, port)."},
    {"bind_unix", py_bind_unix, METH_VARARGS, "Bind and listen on a Unix socket; returns the fd."},
    {"sd_notify", py_sd_notify, METH_O, "Send a state string to systemd when NOTIFY_SOCKET is set."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_core",
    "Pronghorn's C++ engine and ASGI bridge.",
    -1,
    module_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

}  // namespace

}  // namespace pronghorn::bridge

namespace {

// Python's http.HTTPStatus phrases for the status lines, as uvicorn takes
// them: they follow the running Python (3.13 renamed several to RFC 9110's
// names). Kept for the life of the process.
bool install_python_reason_phrases() {
  static std::vector<std::string> storage(500);
  static const char *table[500] = {};
  PyObject *http = PyImport_ImportModule("http");
  PyObject *status_type = http == nullptr ? nullptr : PyObject_GetAttrString(http, "HTTPStatus");
  Py_XDECREF(http);
  PyObject *members = status_type == nullptr ? nullptr : PySequence_List(status_type);
  Py_XDECREF(status_type);
  if (members == nullptr) return false;
  bool ok = true;
  for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(members); ++i) {
    PyObject *member = PyList_GET_ITEM(members, i);
    long code = PyLong_AsLong(member);
    PyObject *phrase = PyObject_GetAttrString(member, "phrase");
    const char *text = phrase == nullptr ? nullptr : PyUnicode_AsUTF8(phrase);
    if (text == nullptr || (code == -1 && PyErr_Occurred())) {
      ok = false;
    } else if (code >= 100 && code <= 599) {
      storage[code - 100] = text;
      table[code - 100] = storage[code - 100].c_str();
    }
    Py_XDECREF(phrase);
  }
  Py_DECREF(members);
  if (ok) pronghorn::http1::install_reason_phrases(table);
  return ok;
}

}  // namespace

PyMODINIT_FUNC PyInit__core() {
  using namespace pronghorn::bridge;
  if (!init_names() || !install_python_reason_phrases()) return nullptr;
  fill_ready_type();
  fill_server_type();
  if (PyType_Ready(&ReadyType) < 0 || !init_request_type() || !init_websocket_type() || !init_task_type() ||
      PyType_Ready(&ServerType) < 0)
    return nullptr;
  PyObject *m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  names.client_disconnected = PyErr_NewExceptionWithDoc(
      "pronghorn._core.ClientDisconnected",
      "Raised by send() when the client has gone away (ASGI spec 2.4: an OSError subclass).", PyExc_OSError, nullptr);
  if (names.client_disconnected == nullptr ||
      PyModule_AddObjectRef(m, "ClientDisconnected", names.client_disconnected) < 0 ||
      PyModule_AddObjectRef(m, "Server", reinterpret_cast<PyObject *>(&ServerType)) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
