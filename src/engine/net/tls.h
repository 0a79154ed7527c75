// TLS with OpenSSL: a context built once per worker from the certificate
// files (TlsContext), and a ByteStream that runs one connection's TLS over its
// socket (TlsStream). No TLS code of our own: OpenSSL does the protocol; this
// only configures it and adapts its calls to the ByteStream contract.
//
// Reading goes through a BIO of ours too: one recv() per read() takes what
// the socket holds (up to 64 KiB) into a per-thread scratch area, OpenSSL
// takes its records from there (OpenSSL's socket BIO makes two read(2) per
// record, header and body), and what the caller's buffer had no room for is
// kept (rin_, at most one recv's worth) and reported by has_buffered_input().
// Writing goes through a BIO of ours that collects the records in a buffer
// (cipher_), sent with one send() per call: OpenSSL's socket BIO makes one
// write(2) per 16 KiB record, which on a 1 MiB download costs more than the
// encryption. What the socket does not take stays in cipher_ (bounded: no
// plaintext is taken while it is over kMaxPendingCipher); the transport sees
// it through pending_output() and flushes it on EPOLLOUT.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/buffer.h"
#include "engine/net/stream.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace pronghorn {

struct TlsOptions {
  std::string certfile;
  std::string keyfile;            // empty: the key is in certfile
  std::string password;           // for an encrypted key
  std::string ca_certs;           // CA file for client certificates
  std::string ciphers;            // OpenSSL cipher list for TLS 1.2; empty: a modern default
  int cert_reqs = 0;              // 0 none, 1 optional, 2 required (Python's ssl.CERT_*)
  int min_version = 0;            // 0: TLS 1.2; else an OpenSSL version constant (TLS1_2_VERSION...)
  int max_version = 0;            // 0: the highest OpenSSL has (TLS 1.3)
  std::vector<std::string> alpn;  // protocols offered, by preference ("http/1.1")
  // Session tickets: every worker derives the same key for the same period
  // from this secret (made once in the parent), so a ticket issued by one
  // worker resumes on another, and keys rotate with the period.
  std::string ticket_secret;
  unsigned ticket_period_s = 3600;
};

// What the ASGI TLS extension reports about a connection.
struct TlsInfo {
  int version = 0;                             // e.g. 0x0304 for TLS 1.3
  int cipher_suite = 0;                        // IANA two-byte cipher suite id
  std::string alpn;                            // negotiated protocol, or empty
  std::string server_name;                     // SNI, or empty
  std::vector<std::string> client_cert_chain;  // PEM, leaf first
  std::string client_cert_name;                // RFC 4514 subject of the leaf, or empty
  std::string client_cert_error;               // verification error, or empty
};

class TlsContext {
 public:
  // Builds the context; on failure returns nullptr and sets `error` to one
  // line naming what is wrong (a missing file, a wrong password, a key that
  // does not match the certificate...).
  static std::unique_ptr<TlsContext> create(const TlsOptions &options, std::string &error);
  ~TlsContext();
  TlsContext(const TlsContext &) = delete;
  TlsContext &operator=(const TlsContext &) = delete;

  SSL_CTX *ctx() const { return ctx_; }
  const std::string &server_cert_pem() const { return server_cert_pem_; }
  const TlsOptions &options() const { return options_; }

 private:
  TlsContext() = default;
  SSL_CTX *ctx_ = nullptr;
  std::string server_cert_pem_;
  TlsOptions options_;
  std::string alpn_wire_;  // the server's preference list in ALPN wire format
  struct TicketKeys {      // [0]: the current period's, [1]: the previous one's
    bool valid = false;
    uint64_t period = 0;
    unsigned char name[2][32], aes[2][32], hmac[2][32];
  } ticket_keys_;

  friend struct TlsCallbacks;
};

// One TLS connection over a connected non-blocking socket (owns the fd).
// OpenSSL writes to the socket with write(2), not send(MSG_NOSIGNAL): the
// process must ignore SIGPIPE, as every Python process does (the workers).
class TlsStream final : public ByteStream {
 public:
  // nullptr (logged) if OpenSSL cannot make the connection object.
  static std::unique_ptr<TlsStream> create(const TlsContext &context, int fd);
  ~TlsStream() override;

  ssize_t read(char *buf, size_t len) override;
  ssize_t writev(const iovec *iov, int count) override;
  // Reads the file and encrypts it in bounded chunks (no kernel TLS here).
  ssize_t send_file(int file_fd, off_t *offset, size_t len) override;
  // Sends close_notify, then half-closes the socket.
  void shutdown_write() override;
  int fd() const override { return fd_; }
  // Only OpenSSL may write to this socket: no send thread.
  int raw_send_fd() const override { return -1; }
  const TlsInfo *tls_info() const override;
  size_t pending_output() const override { return cipher_.size(); }
  bool read_blocked() const override;
  bool sends_itself() const override { return true; }
  uint64_t sent_bytes() const override { return sent_bytes_; }
  bool buffers_input() const override { return true; }
  bool has_buffered_input() const override;
  ssize_t flush_pending() override;
  void release_buffers() override;
  void hold_read_output(bool hold) override { hold_read_output_ = hold; }
  bool handshake_done() const;

 private:
  TlsStream(SSL *ssl, int fd) : ssl_(ssl), fd_(fd) {}
  ssize_t result(int ret, size_t done);
  ssize_t write_plain(const char *data, size_t len);
  friend struct CipherBio;
  friend struct CipherInBio;

  SSL *ssl_;
  int fd_;
  std::string gather_;  // iovecs joined, so that small pieces share a record
  Buffer cipher_;       // records OpenSSL wrote that the socket has not taken yet
  // The read side: OpenSSL reads from in_view_ (set during read(): the
  // scratch area after a recv, or rin_); what it did not take goes to rin_.
  Buffer rin_;
  const char *in_view_ = nullptr;
  size_t in_view_len_ = 0;
  bool eof_seen_ = false;  // the socket reported its end (OpenSSL sees it after the bytes before it)
  bool finished_ = false;  // read() returned 0 or kFailed: nothing more to come back for
  ssize_t deferred_ = 1;   // 0 or kFailed met after data: the next read() returns it (1: none)
  int deferred_errno_ = 0;
  int send_errno_ = 0;  // a failed send(): reported by the next call
  mutable std::unique_ptr<TlsInfo> info_;
  bool failed_logged_ = false;
  bool shut_ = false;
  bool shut_pending_ = false;  // SHUT_WR waits until close_notify has left cipher_
  bool hold_read_output_ = false;
  uint64_t sent_bytes_ = 0;  // bytes the socket took (the write-stall clock's progress)
};

}  // namespace pronghorn
