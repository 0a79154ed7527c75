#include "engine/net/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "engine/log.h"

namespace pronghorn {

namespace {

// TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3's are all fine
// and configured apart). What Mozilla's "intermediate" profile lists.
constexpr const char *kModernCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

// TLS 1.3's suites in Mozilla's order (OpenSSL's default puts AES-256 first).
// The server's preference decides: AES-128-GCM with SHA-256 costs less per
// handshake (the key schedule's HKDF and the transcript hash run on SHA-256,
// which CPUs have instructions for, instead of SHA-384: about 15% of a
// resumed handshake's instructions) and per byte (10 AES rounds instead of
// 14), on both sides, at a security level every current guideline accepts.
constexpr const char *kTls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// A write encrypts what it is given (up to kMaxGather) at once and keeps
// the records the socket does not take, as asyncio's SSL transport does:
// the plaintext is not copied into the transport's queue, and the
// session's flow control still sees them (Transport::queued_bytes counts
// pending_output()), so a slow reader holds at most about the high-water
// mark plus one write.
constexpr size_t kMaxGather = 1024 * 1024;         // plaintext taken per writev call
constexpr size_t kMaxPendingCipher = 1024 * 1024;  // records held before plaintext waits
constexpr size_t kSmallPiece = 4096;               // smaller pieces are joined into one record
constexpr size_t kFileChunk = 64 * 1024;           // bytes of a file read and encrypted per call

// SSL_get_error needs an empty error queue before each call. ERR_clear_error
// resets all 16 slots of it (about 800 instructions, two or three times per
// request); looking first costs a fifth of that, and the queue is nearly
// always empty (every failure path here empties it).
void clear_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

// The last OpenSSL error as text (and the queue emptied).
std::string openssl_error() {
  unsigned long code = ERR_peek_last_error();
  std::string text;
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    const char *reason = ERR_reason_error_string(code);
    text = reason != nullptr ? reason : buf;
  }
  ERR_clear_error();
  return text.empty() ? "unknown OpenSSL error" : text;
}

std::string pem_of(X509 *cert) {
  std::string out;
  BIO *bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return out;
  if (PEM_write_bio_X509(bio, cert) == 1) {
    char *data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    if (len > 0) out.assign(data, static_cast<size_t>(len));
  }
  BIO_free(bio);
  return out;
}

int password_callback(char *buf, int size, int, void *userdata) {
  const auto *password = static_cast<const std::string *>(userdata);
  if (password == nullptr || password->empty()) return 0;
  int n = static_cast<int>(std::min<size_t>(password->size(), static_cast<size_t>(size)));
  memcpy(buf, password->data(), static_cast<size_t>(n));
  return n;
}

// HMAC-SHA256(secret, label || period) into out (32 bytes).
void derive(const std::string &secret, const char *label, uint64_t period, unsigned char out[32]) {
  unsigned char message[64];
  size_t label_len = strlen(label);
  memcpy(message, label, label_len);
  for (int i = 0; i < 8; ++i) message[label_len + i] = static_cast<unsigned char>(period >> (8 * i));
  unsigned int len = 32;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message, label_len + 8, out, &len);
}

}  // namespace

// OpenSSL's C callbacks, with access to the context's private parts.
struct TlsCallbacks {
  static int alpn_select(SSL *, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                         unsigned int inlen, void *arg) {
    auto *context = static_cast<TlsContext *>(arg);
    const std::string &ours = context->alpn_wire_;
    unsigned char *selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, reinterpret_cast<const unsigned char *>(ours.data()),
                              static_cast<unsigned int>(ours.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
      return SSL_TLSEXT_ERR_NOACK;  // no protocol in common: go on without ALPN, as nginx does
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }

  // Session tickets keyed by the period: key material derived from the
  // shared secret, so every worker of the server agrees on it, and a ticket
  // of the previous period is still accepted (and renewed).
  static int ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cipher,
                        EVP_MAC_CTX *mac, int encrypt) {
    SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
    auto *context = static_cast<TlsContext *>(SSL_CTX_get_app_data(ctx));
    const TlsOptions &options = context->options_;
    uint64_t period = static_cast<uint64_t>(time(nullptr)) / std::max(1u, options.ticket_period_s);
    // Derived once per period (HMACs cost microseconds; a handshake issues
    // two tickets): the current keys and the previous period's.
    auto &keys = context->ticket_keys_;
    if (!keys.valid || keys.period != period) {
      for (int k = 0; k < 2; ++k) {
        uint64_t p = period - static_cast<uint64_t>(k);
        derive(options.ticket_secret, "pronghorn ticket name", p, keys.name[k]);
        derive(options.ticket_secret, "pronghorn ticket aes", p, keys.aes[k]);
        derive(options.ticket_secret, "pronghorn ticket hmac", p, keys.hmac[k]);
      }
      keys.period = period;
      keys.valid = true;
    }
    int which = 0;
    int result = 1;
    if (encrypt) {
      memcpy(key_name, keys.name[0], 16);
      if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
      if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, keys.aes[0], iv) != 1) return -1;
    } else {
      if (memcmp(key_name, keys.name[0], 16) != 0) {
        if (memcmp(key_name, keys.name[1], 16) != 0) return 0;  // unknown key: a full handshake
        which = 1;
        result = 2;  // valid, but issue a ticket under the current key
      }
      if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, keys.aes[which], iv) != 1) return -1;
      // TLS 1.3 clients use a ticket once (RFC 8446 C.4): a resumption must
      // issue a new one, or the client's next connection is a full handshake
      // (OpenSSL issues none after a resumption when this returns 1).
      if (SSL_version(ssl) >= TLS1_3_VERSION) result = 2;
    }
    unsigned char *hmac_key = keys.hmac[which];
    OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac_key, 32),
                           OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char *>("SHA256"), 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
    return result;
  }
};

std::unique_ptr<TlsContext> TlsContext::create(const TlsOptions &options, std::string &error) {
  std::unique_ptr<TlsContext> context(new TlsContext());
  context->options_ = options;
  if (context->options_.ticket_secret.empty()) {
    // One worker alone: a secret of its own (tickets resume on this worker only).
    unsigned char secret[32];
    if (RAND_bytes(secret, sizeof secret) != 1) {
      error = "cannot make a session ticket secret: " + openssl_error();
      return nullptr;
    }
    context->options_.ticket_secret.assign(reinterpret_cast<char *>(secret), sizeof secret);
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    error = "cannot create a TLS context: " + openssl_error();
    return nullptr;
  }
  context->ctx_ = ctx;
  SSL_CTX_set_app_data(ctx, context.get());
  // TLS 1.2 and 1.3 only, unless narrowed further.
  SSL_CTX_set_min_proto_version(ctx, std::max(options.min_version, TLS1_2_VERSION));
  SSL_CTX_set_max_proto_version(ctx, options.max_version);
  // A peer that closes without close_notify ends the stream (OpenSSL 3
  // would report an error): HTTP/1 frames its messages, so a truncation is
  // seen there, and a complete response still queued is sent as over TCP.
  // The server's order picks AES-GCM (cheaper for both sides with AES
  // instructions), except for a client that lists ChaCha20 first: that is
  // how one without them says so, and it gets ChaCha20.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_PRIORITIZE_CHACHA | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // OpenSSL's own record buffers are freed while a connection is idle.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  const std::string &ciphers = options.ciphers.empty() ? std::string(kModernCiphers) : options.ciphers;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    error = "invalid --ssl-ciphers '" + options.ciphers + "': " + openssl_error();
    return nullptr;
  }
  if (SSL_CTX_set_ciphersuites(ctx, kTls13Suites) != 1) {
    error = "cannot set the TLS 1.3 cipher suites: " + openssl_error();
    return nullptr;
  }
  SSL_CTX_set_default_passwd_cb(ctx, password_callback);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, &context->options_.password);
  if (SSL_CTX_use_certificate_chain_file(ctx, options.certfile.c_str()) != 1) {
    error = "cannot load the certificate from " + options.certfile + ": " + openssl_error();
    return nullptr;
  }
  const std::string &keyfile = options.keyfile.empty() ? options.certfile : options.keyfile;
  if (SSL_CTX_use_PrivateKey_file(ctx, keyfile.c_str(), SSL_FILETYPE_PEM) != 1) {
    std::string reason = openssl_error();
    if (reason == "key values mismatch") {
      error = "the private key in " + keyfile + " does not match the certificate in " + options.certfile;
      return nullptr;
    }
    if (reason == "bad decrypt" || reason.find("password") != std::string::npos)
      reason +=
          options.password.empty() ? " (the key is encrypted: give --ssl-keyfile-password)" : " (wrong password?)";
    error = "cannot load the private key from " + keyfile + ": " + reason;
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    error = "the private key in " + keyfile + " does not match the certificate in " + options.certfile;
    ERR_clear_error();
    return nullptr;
  }
  if (!options.ca_certs.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, options.ca_certs.c_str(), nullptr) != 1) {
      error = "cannot load the CA certificates from " + options.ca_certs + ": " + openssl_error();
      return nullptr;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(options.ca_certs.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
  }
  if (options.cert_reqs == 1) SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (options.cert_reqs == 2) SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // The session id context: a digest of what a resumed session relies on
  // (the certificate, the client CAs, the client-certificate rule), so that
  // a reload with other files does not resume sessions made under the old
  // ones (a CA removed from --ssl-ca-certs).
  {
    std::string material = pem_of(SSL_CTX_get0_certificate(ctx));
    if (!options.ca_certs.empty()) {
      FILE *f = fopen(options.ca_certs.c_str(), "rb");
      if (f != nullptr) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) material.append(buf, n);
        fclose(f);
      }
    }
    material += static_cast<char>('0' + options.cert_reqs);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_Digest(material.data(), material.size(), digest, &digest_len, EVP_sha256(), nullptr);
    SSL_CTX_set_session_id_context(ctx, digest, std::min<unsigned int>(digest_len, SSL_MAX_SID_CTX_LENGTH));
  }
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, TlsCallbacks::ticket_key);
  for (const std::string &protocol : options.alpn) {
    context->alpn_wire_.push_back(static_cast<char>(protocol.size()));
    context->alpn_wire_.append(protocol);
  }
  if (!context->alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, TlsCallbacks::alpn_select, context.get());
  if (X509 *cert = SSL_CTX_get0_certificate(ctx)) context->server_cert_pem_ = pem_of(cert);
  return context;
}

TlsContext::~TlsContext() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

// The write side's BIO: OpenSSL's records are appended to the stream's
// cipher_ buffer (never "would block"); TlsStream sends them.
struct CipherBio {
  static BIO_METHOD *method() {
    static BIO_METHOD *m = [] {
      BIO_METHOD *bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pronghorn cipher out");
      BIO_meth_set_write_ex(bm, write_ex);
      BIO_meth_set_ctrl(bm, ctrl);
      return bm;
    }();
    return m;
  }
  static int write_ex(BIO *bio, const char *data, size_t len, size_t *written) {
    auto *stream = static_cast<TlsStream *>(BIO_get_data(bio));
    stream->cipher_.append(data, len);
    *written = len;
    return 1;
  }
  static long ctrl(BIO *, int cmd, long, void *) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
};

// The read side's BIO: OpenSSL takes ciphertext from the stream's current
// view (set by TlsStream::read for the length of its SSL_read calls). With
// nothing left it says "retry" (OpenSSL reports want-read), or end of file
// once the socket reported its end.
struct CipherInBio {
  static BIO_METHOD *method() {
    static BIO_METHOD *m = [] {
      BIO_METHOD *bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pronghorn cipher in");
      BIO_meth_set_read_ex(bm, read_ex);
      BIO_meth_set_ctrl(bm, ctrl);
      return bm;
    }();
    return m;
  }
  static int read_ex(BIO *bio, char *out, size_t len, size_t *readbytes) {
    auto *stream = static_cast<TlsStream *>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    size_t n = std::min(len, stream->in_view_len_);
    if (n == 0) {
      *readbytes = 0;
      if (!stream->eof_seen_) BIO_set_retry_read(bio);
      return 0;
    }
    memcpy(out, stream->in_view_, n);
    stream->in_view_ += n;
    stream->in_view_len_ -= n;
    *readbytes = n;
    return 1;
  }
  static long ctrl(BIO *bio, int cmd, long, void *) {
    auto *stream = static_cast<TlsStream *>(BIO_get_data(bio));
    switch (cmd) {
      case BIO_CTRL_FLUSH: return 1;
      // OpenSSL asks at a failed read whether this is the end (an EOF
      // without close_notify: SSL_OP_IGNORE_UNEXPECTED_EOF makes it one).
      case BIO_CTRL_EOF: return stream->eof_seen_ && stream->in_view_len_ == 0 ? 1 : 0;
      case BIO_CTRL_PENDING: return static_cast<long>(stream->in_view_len_);
      default: return 0;
    }
  }
};

namespace {
// One recv() per read() takes up to this much ciphertext: the transport's
// read size, so that what one recv() brings fits in the caller's buffer once
// decrypted (records shrink) save for a record OpenSSL had begun before.
constexpr size_t kCipherRead = 64 * 1024;

// Where recv() puts ciphertext: one area per thread (the worker's loop
// thread), not per connection; what a read leaves is copied to the stream.
char *cipher_scratch() {
  thread_local std::unique_ptr<char[]> scratch;
  if (scratch == nullptr) scratch.reset(new char[kCipherRead]);
  return scratch.get();
}
}  // namespace

std::unique_ptr<TlsStream> TlsStream::create(const TlsContext &context, int fd) {
  SSL *ssl = SSL_new(context.ctx());
  BIO *rbio = ssl == nullptr ? nullptr : BIO_new(CipherInBio::method());
  BIO *wbio = rbio == nullptr ? nullptr : BIO_new(CipherBio::method());
  if (wbio == nullptr) {
    log(LogLevel::Error, "cannot start TLS on fd %d: %s", fd, openssl_error().c_str());
    if (rbio != nullptr) BIO_free(rbio);
    if (ssl != nullptr) SSL_free(ssl);
    ::close(fd);
    return nullptr;
  }
  std::unique_ptr<TlsStream> stream(new TlsStream(ssl, fd));
  BIO_set_data(rbio, stream.get());
  BIO_set_init(rbio, 1);
  BIO_set_data(wbio, stream.get());
  BIO_set_init(wbio, 1);
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_accept_state(ssl);
  return stream;
}

ssize_t TlsStream::flush_pending() {
  size_t sent = 0;
  while (!cipher_.empty()) {
    ssize_t n = ::send(fd_, cipher_.data(), cipher_.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return sent > 0 ? static_cast<ssize_t>(sent) : kWouldBlock;
      send_errno_ = errno;
      return kFailed;
    }
    cipher_.consume(static_cast<size_t>(n));
    sent += static_cast<size_t>(n);
    sent_bytes_ += static_cast<uint64_t>(n);
  }
  // close_notify has gone out: the half-close it waited for.
  if (shut_pending_) {
    shut_pending_ = false;
    ::shutdown(fd_, SHUT_WR);
  }
  // The buffer's memory stays while the connection is busy (freeing and
  // reallocating it per write costs page faults); release_buffers() frees it.
  return static_cast<ssize_t>(sent);
}

TlsStream::~TlsStream() {
  // close_notify for a connection closed in good order (a graceful stop, a
  // keep-alive timeout), best effort: the socket is non-blocking.
  if (!shut_ && !failed_logged_ && send_errno_ == 0 && SSL_is_init_finished(ssl_)) {
    SSL_shutdown(ssl_);
    flush_pending();
  }
  SSL_free(ssl_);
  ERR_clear_error();
  ::close(fd_);
}

bool TlsStream::handshake_done() const {
  return SSL_is_init_finished(ssl_) == 1;
}

ssize_t TlsStream::result(int ret, size_t done) {
  if (ret == 1) return static_cast<ssize_t>(done);
  int saved_errno = errno;
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: return kWouldBlock;
    case SSL_ERROR_ZERO_RETURN: return 0;  // close_notify from the peer
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      if (saved_errno == 0) return 0;  // the peer closed without close_notify
      errno = saved_errno;
      return kFailed;
    default: {
      // Not TLS (a plain HTTP request on the TLS port), a failed handshake
      // (no common version or cipher, a refused client certificate), or a
      // corrupt record. Said once, at debug: a scanner must not fill the log.
      std::string reason = openssl_error();
      if (!failed_logged_) {
        failed_logged_ = true;
        log(LogLevel::Debug, "TLS %s on fd %d failed: %s", handshake_done() ? "connection" : "handshake", fd_,
            reason.c_str());
      }
      errno = EPROTO;
      return kFailed;
    }
  }
}

bool TlsStream::read_blocked() const {
  return cipher_.size() > kMaxPendingCipher;
}

void TlsStream::release_buffers() {
  cipher_.release_if_empty();
  rin_.release_if_empty();
  if (gather_.capacity() > 4096) std::string().swap(gather_);
}

bool TlsStream::has_buffered_input() const {
  if (finished_) return false;
  return deferred_ != 1 || !rin_.empty() || eof_seen_ || SSL_pending(ssl_) > 0;
}

ssize_t TlsStream::read(char *buf, size_t len) {
  // Reading makes records of its own (alerts, KeyUpdate replies): a peer
  // that sends and never reads must not grow them without bound.
  if (cipher_.size() > kMaxPendingCipher) {
    if (flush_pending() == kFailed) return kFailed;
    if (cipher_.size() > kMaxPendingCipher) return kWouldBlock;
  }
  if (deferred_ != 1) {
    // The end or an error met behind data the last read returned.
    ssize_t r = deferred_;
    deferred_ = 1;
    finished_ = true;
    errno = deferred_errno_;
    return r;
  }
  // Ciphertext: what an earlier read left, or else one recv(). Only when
  // nothing is held (rin_ is then empty: OpenSSL takes every byte it is
  // offered until its record is complete), so rin_ stays within one recv.
  bool from_scratch = false;
  if (!rin_.empty()) {
    in_view_ = rin_.data();
    in_view_len_ = rin_.size();
  } else if (SSL_pending(ssl_) == 0 && !eof_seen_) {
    char *scratch = cipher_scratch();
    ssize_t got;
    do {
      got = ::recv(fd_, scratch, kCipherRead, 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return kWouldBlock;
      finished_ = true;
      return kFailed;
    }
    if (got == 0) eof_seen_ = true;
    in_view_ = scratch;
    in_view_len_ = static_cast<size_t>(got);
    from_scratch = true;
  }
  // Records into the caller's buffer until it is full or the bytes run out
  // (OpenSSL's SSL_read returns one record at a time). Once a call returned
  // data with nothing left to give (no bytes in the view, none decrypted in
  // OpenSSL, no end to report), the next would only say "want read": not
  // made (it costs a call and OpenSSL's buffer set-up, about 1,500
  // instructions per request).
  size_t total = 0;
  ssize_t n = kWouldBlock;
  while (total < len) {
    size_t done = 0;
    clear_errors();
    errno = 0;
    int ret = SSL_read_ex(ssl_, buf + total, len - total, &done);
    n = result(ret, done);
    if (n <= 0) break;
    total += static_cast<size_t>(n);
    if (in_view_len_ == 0 && !eof_seen_ && SSL_pending(ssl_) == 0) break;
  }
  // What OpenSSL did not take (the caller's buffer filled) is kept.
  size_t used = from_scratch || rin_.empty() ? 0 : rin_.size() - in_view_len_;
  if (from_scratch) {
    if (in_view_len_ > 0) rin_.append(in_view_, in_view_len_);
  } else if (used > 0) {
    rin_.consume(used);
    rin_.release_if_empty();
  }
  in_view_ = nullptr;
  in_view_len_ = 0;
  if (total > 0) {
    // The end or an error behind the data: reported by the next read.
    if (n == 0 || n == kFailed) {
      deferred_ = n;
      deferred_errno_ = errno;
    }
    n = static_cast<ssize_t>(total);
  } else if (n == 0 || n == kFailed) {
    finished_ = true;
  }
  // Reading may have made records to send (the handshake's flights, session
  // tickets, alerts): send them now; what the socket does not take waits
  // for EPOLLOUT (the transport sees pending_output()). Held (during a
  // readable event): records made once the handshake is done (the session
  // ticket that follows the client's Finished, which often arrives with the
  // first request) go out with the response, in one send instead of two, or
  // at the end of the event.
  int saved_errno = errno;
  bool hold = hold_read_output_ && n != kFailed && cipher_.size() <= kMaxPendingCipher && SSL_is_init_finished(ssl_);
  if (!cipher_.empty() && !hold && flush_pending() == kFailed && n >= 0) return kFailed;
  errno = saved_errno;
  return n;
}

ssize_t TlsStream::write_plain(const char *data, size_t len) {
  // With partial writes on, SSL_write_ex returns after each record: go on
  // until the piece is all encrypted (the write BIO never blocks).
  size_t total = 0;
  while (total < len) {
    size_t done = 0;
    clear_errors();
    errno = 0;
    int ret = SSL_write_ex(ssl_, data + total, len - total, &done);
    ssize_t n = result(ret, done);
    if (n <= 0) {
      if (total > 0) break;
      return n == 0 ? kFailed : n;
    }
    total += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(total);
}

ssize_t TlsStream::writev(const iovec *iov, int count) {
  // Small pieces (a head, a chunk size, CRLF) are joined so that they share
  // a record; a large piece (a body) is encrypted from where it is, with no
  // copy. A retry after "want write" passes the same leading bytes again
  // (the transport keeps them queued in order), as OpenSSL requires with
  // partial writes.
  // Records the socket has not taken yet go first (cipher_ is in order: new
  // records follow them, and one send() takes both); no more plaintext is
  // taken while they are many.
  if (cipher_.size() > kMaxPendingCipher) {
    if (flush_pending() == kFailed) return kFailed;
    if (cipher_.size() > kMaxPendingCipher) return kWouldBlock;
  }
  size_t total = 0;
  int i = 0;
  while (i < count && total < kMaxGather && cipher_.size() <= kMaxPendingCipher) {
    ssize_t n;
    size_t wanted;
    if (iov[i].iov_len >= kSmallPiece) {
      wanted = iov[i].iov_len;
      n = write_plain(static_cast<const char *>(iov[i].iov_base), wanted);
      ++i;
    } else {
      gather_.clear();
      for (; i < count && iov[i].iov_len < kSmallPiece && gather_.size() < kMaxGather; ++i)
        gather_.append(static_cast<const char *>(iov[i].iov_base), iov[i].iov_len);
      wanted = gather_.size();
      n = write_plain(gather_.data(), wanted);
    }
    if (n < 0) {
      if (total == 0) return n;
      break;
    }
    total += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < wanted) break;
  }
  // The records of the whole call leave in one send() (or wait for EPOLLOUT).
  if (flush_pending() == kFailed) return kFailed;
  return static_cast<ssize_t>(total);
}

ssize_t TlsStream::send_file(int file_fd, off_t *offset, size_t len) {
  if (!cipher_.empty() && flush_pending() == kFailed) return kFailed;
  if (cipher_.size() > kMaxPendingCipher) return kWouldBlock;
  size_t want = std::min(len, kFileChunk);
  gather_.resize(want);
  ssize_t got = ::pread(file_fd, gather_.data(), want, *offset);
  if (got < 0) return kFailed;
  if (got == 0) return 0;
  ssize_t n = write_plain(gather_.data(), static_cast<size_t>(got));
  if (n > 0) {
    *offset += n;
    if (flush_pending() == kFailed) return kFailed;
  }
  return n;
}

void TlsStream::shutdown_write() {
  if (!shut_ && SSL_is_init_finished(ssl_)) {
    SSL_shutdown(ssl_);
    flush_pending();
  }
  shut_ = true;
  ERR_clear_error();
  // The half-close follows close_notify (and whatever was before it): if
  // the socket has not taken it all, it waits for flush_pending().
  if (cipher_.empty())
    ::shutdown(fd_, SHUT_WR);
  else
    shut_pending_ = true;
}

const TlsInfo *TlsStream::tls_info() const {
  if (info_ != nullptr || !SSL_is_init_finished(ssl_)) return info_.get();
  auto info = std::make_unique<TlsInfo>();
  info->version = SSL_version(ssl_);
  if (const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl_))
    info->cipher_suite = static_cast<int>(SSL_CIPHER_get_protocol_id(cipher));
  const unsigned char *alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  if (alpn != nullptr) info->alpn.assign(reinterpret_cast<const char *>(alpn), alpn_len);
  if (const char *name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) info->server_name = name;
  if (X509 *leaf = SSL_get0_peer_certificate(ssl_)) {
    info->client_cert_chain.push_back(pem_of(leaf));
    // On the server side the peer chain does not include the leaf.
    if (STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl_))
      for (int i = 0; i < sk_X509_num(chain); ++i) info->client_cert_chain.push_back(pem_of(sk_X509_value(chain, i)));
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != nullptr) {
      X509_NAME_print_ex(bio, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253);
      char *data = nullptr;
      long len = BIO_get_mem_data(bio, &data);
      if (len > 0) info->client_cert_name.assign(data, static_cast<size_t>(len));
      BIO_free(bio);
    }
    long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) info->client_cert_error = X509_verify_cert_error_string(verify);
  }
  ERR_clear_error();
  info_ = std::move(info);
  return info_.get();
}

}  // namespace pronghorn
