// TlsStream against an OpenSSL client in memory: the client's records are
// carried to the server's socket (one end of a socketpair) in pieces of
// every size from one byte up, so each TLS record arrives split at every
// byte boundary; the server side is the engine's TlsStream as a session uses it.
#include "engine/net/tls.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/net/transport.h"

namespace pronghorn {
namespace {

// A self-signed P-256 certificate for "localhost", written to temporary files.
struct TestCertificate {
  std::string dir, cert, key;
  TestCertificate() {
    char templ[] = "/tmp/pronghorn-tls-test-XXXXXX";
    dir = mkdtemp(templ);
    cert = dir + "/cert.pem";
    key = dir + "/key.pem";
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x509 = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
    X509_gmtime_adj(X509_getm_notBefore(x509), 0);
    X509_gmtime_adj(X509_getm_notAfter(x509), 3600);
    X509_set_pubkey(x509, pkey);
    X509_NAME *name = X509_get_subject_name(x509);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char *>("localhost"), -1, -1,
                               0);
    X509_set_issuer_name(x509, name);
    X509_sign(x509, pkey, EVP_sha256());
    FILE *f = fopen(cert.c_str(), "w");
    PEM_write_X509(f, x509);
    fclose(f);
    f = fopen(key.c_str(), "w");
    PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr);
    fclose(f);
    X509_free(x509);
    EVP_PKEY_free(pkey);
  }
  ~TestCertificate() {
    unlink(cert.c_str());
    unlink(key.c_str());
    rmdir(dir.c_str());
  }
};

const TestCertificate &certificate() {
  static TestCertificate c;
  return c;
}

// One connection: the engine's TlsStream on one end of a socketpair, an
// OpenSSL client over memory BIOs on the other; the test carries the bytes.
class Pair {
 public:
  Pair(const TlsContext &context, size_t piece) : piece_(piece) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    client_fd_ = fds[1];
    server_fd_ = fds[0];
    server = TlsStream::create(context, fds[0]);
    client_ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx_, SSL_VERIFY_NONE, nullptr);
    const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(client_ctx_, alpn, sizeof alpn - 1);
    client_ = SSL_new(client_ctx_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    SSL_set_bio(client_, in_, out_);
    SSL_set_tlsext_host_name(client_, "localhost");
    SSL_set_connect_state(client_);
  }
  ~Pair() {
    SSL_free(client_);
    SSL_CTX_free(client_ctx_);
    if (client_fd_ >= 0) close(client_fd_);
  }

  // Moves what the client wrote to the server's socket, `piece` bytes at a
  // time, letting the server read after each piece; and what the server
  // wrote back into the client. Returns the plaintext the server read.
  std::string carry() {
    std::string plain;
    char buf[16384];
    for (int round = 0; round < 64; ++round) {
      bool moved = false;
      char *data = nullptr;
      long pending = BIO_get_mem_data(out_, &data);
      std::string bytes(data, pending > 0 ? static_cast<size_t>(pending) : 0);
      (void)BIO_reset(out_);
      for (size_t at = 0; at < bytes.size(); at += piece_) {
        size_t n = std::min(piece_, bytes.size() - at);
        EXPECT_EQ(write(client_fd_, bytes.data() + at, n), static_cast<ssize_t>(n));
        moved = true;
        while (true) {
          ssize_t got = server->read(buf, sizeof buf);
          if (got <= 0) {
            last_read = got;
            break;
          }
          plain.append(buf, static_cast<size_t>(got));
        }
      }
      ssize_t back;
      while ((back = read(client_fd_, buf, sizeof buf)) > 0) {
        BIO_write(in_, buf, static_cast<int>(back));
        moved = true;
      }
      SSL_do_handshake(client_);
      ERR_clear_error();
      if (!moved && BIO_ctrl_pending(out_) == 0) break;
    }
    return plain;
  }

  // One step of each direction, for tests that order the flights themselves.
  void client_step() {
    SSL_do_handshake(client_);
    ERR_clear_error();
  }
  std::string to_server() {
    std::string plain;
    char *data = nullptr;
    long pending = BIO_get_mem_data(out_, &data);
    if (pending > 0) {
      EXPECT_EQ(write(client_fd_, data, static_cast<size_t>(pending)), pending);
    }
    (void)BIO_reset(out_);
    char buf[16384];
    ssize_t got;
    while ((got = server->read(buf, sizeof buf)) > 0) plain.append(buf, static_cast<size_t>(got));
    return plain;
  }
  size_t to_client() {
    char buf[16384];
    ssize_t back;
    size_t total = 0;
    while ((back = read(client_fd_, buf, sizeof buf)) > 0) {
      BIO_write(in_, buf, static_cast<int>(back));
      total += static_cast<size_t>(back);
    }
    return total;
  }
  bool client_has_ticket() const { return SSL_SESSION_has_ticket(SSL_get0_session(client_)) == 1; }

  bool client_done() const { return SSL_is_init_finished(client_) == 1; }
  void client_write(const std::string &text) {
    size_t done = 0;
    ASSERT_EQ(SSL_write_ex(client_, text.data(), text.size(), &done), 1);
  }
  std::string client_read(int *ssl_error = nullptr) {
    std::string plain;
    char buf[16384];
    size_t n = 0;
    int ret;
    while ((ret = SSL_read_ex(client_, buf, sizeof buf, &n)) == 1) plain.append(buf, n);
    if (ssl_error != nullptr) *ssl_error = SSL_get_error(client_, ret);
    ERR_clear_error();
    return plain;
  }
  // What the client wrote, onto the server's socket (the server does not read).
  size_t send_to_server(size_t limit = SIZE_MAX) {
    char *data = nullptr;
    long pending = BIO_get_mem_data(out_, &data);
    size_t n = std::min(static_cast<size_t>(pending > 0 ? pending : 0), limit);
    if (n > 0) {
      EXPECT_EQ(write(client_fd_, data, n), static_cast<ssize_t>(n));
    }
    std::string rest(data + n, static_cast<size_t>(pending > 0 ? pending : 0) - n);
    (void)BIO_reset(out_);
    if (!rest.empty()) BIO_write(out_, rest.data(), static_cast<int>(rest.size()));
    return n;
  }
  size_t client_pending() const { return BIO_ctrl_pending(out_); }
  void client_shutdown() {
    SSL_shutdown(client_);
    ERR_clear_error();
  }
  // The server's socket holds nothing to read: what the server has left is
  // in user space.
  bool server_socket_empty() const {
    char c;
    return recv(server_fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
  }
  int server_fd() const { return server_fd_; }
  bool client_open() const { return client_fd_ >= 0; }
  void close_client_socket() {
    close(client_fd_);
    client_fd_ = -1;
  }
  void raw_client_send(const std::string &bytes) {
    ASSERT_EQ(write(client_fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }

  SSL *client_ssl() const { return client_; }

  std::unique_ptr<TlsStream> server;
  ssize_t last_read = 0;

 private:
  size_t piece_;
  int client_fd_ = -1;
  int server_fd_ = -1;
  SSL_CTX *client_ctx_ = nullptr;
  SSL *client_ = nullptr;
  BIO *in_ = nullptr;   // owned by client_
  BIO *out_ = nullptr;  // owned by client_
};

std::unique_ptr<TlsContext> context() {
  signal(SIGPIPE, SIG_IGN);  // as in the server (Python ignores it): a closed peer is an EPIPE
  TlsOptions options;
  options.certfile = certificate().cert;
  options.keyfile = certificate().key;
  options.alpn = {"http/1.1"};
  std::string error;
  auto ctx = TlsContext::create(options, error);
  EXPECT_NE(ctx, nullptr) << error;
  return ctx;
}

TEST(TlsStream, HandshakeAndRequestSplitAtEveryByteBoundary) {
  auto ctx = context();
  ASSERT_NE(ctx, nullptr);
  const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  for (size_t piece : {1u, 2u, 3u, 7u, 64u, 1000u, 100000u}) {
    SCOPED_TRACE(piece);
    Pair pair(*ctx, piece);
    ASSERT_NE(pair.server, nullptr);
    pair.carry();
    ASSERT_TRUE(pair.client_done());
    ASSERT_TRUE(pair.server->handshake_done());
    pair.client_write(request);
    EXPECT_EQ(pair.carry(), request);
    // The response, in pieces as a session writes it (head, chunk size, body, CRLF).
    std::string head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", size = "5\r\n", body = "hello",
                crlf = "\r\n0\r\n\r\n";
    iovec iov[] = {
        {head.data(), head.size()}, {size.data(), size.size()}, {body.data(), body.size()}, {crlf.data(), crlf.size()}};
    ssize_t n = pair.server->writev(iov, 4);
    ASSERT_EQ(n, static_cast<ssize_t>(head.size() + size.size() + body.size() + crlf.size()));
    pair.carry();
    EXPECT_EQ(pair.client_read(), head + size + body + crlf);
    const TlsInfo *info = pair.server->tls_info();
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->version, TLS1_3_VERSION);
    EXPECT_EQ(info->alpn, "http/1.1");
    EXPECT_EQ(info->server_name, "localhost");
  }
}

// The client's Finished and its first request in one read: the session
// ticket that the Finished makes waits (hold_read_output, as the transport
// asks during a readable event) and leaves with the response, in one send.
TEST(TlsStream, TicketMadeByTheFirstRequestsReadLeavesWithTheResponse) {
  auto ctx = context();
  Pair pair(*ctx, 100000);
  pair.server->hold_read_output(true);
  pair.client_step();  // ClientHello
  EXPECT_EQ(pair.to_server(), "");
  EXPECT_EQ(pair.server->pending_output(), 0u);  // the server's flight is not held: no data was read
  ASSERT_GT(pair.to_client(), 0u);
  pair.client_step();  // the server's flight read; the client's Finished written
  ASSERT_TRUE(pair.client_done());
  const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  pair.client_write(request);
  EXPECT_EQ(pair.to_server(), request);
  EXPECT_GT(pair.server->pending_output(), 0u);  // the ticket, held
  EXPECT_EQ(pair.to_client(), 0u);
  std::string response = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
  iovec iov[] = {{response.data(), response.size()}};
  ASSERT_EQ(pair.server->writev(iov, 1), static_cast<ssize_t>(response.size()));
  EXPECT_EQ(pair.server->pending_output(), 0u);
  EXPECT_GT(pair.to_client(), 0u);
  EXPECT_EQ(pair.client_read(), response);
  EXPECT_TRUE(pair.client_has_ticket());
  const TlsInfo *info = pair.server->tls_info();
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->cipher_suite, 0x1301);  // TLS_AES_128_GCM_SHA256 preferred
}

TEST(TlsStream, CloseNotifyOnShutdown) {
  auto ctx = context();
  Pair pair(*ctx, 16);
  pair.carry();
  ASSERT_TRUE(pair.server->handshake_done());
  pair.server->shutdown_write();
  pair.carry();
  int error = 0;
  EXPECT_EQ(pair.client_read(&error), "");
  EXPECT_EQ(error, SSL_ERROR_ZERO_RETURN);  // close_notify, not a truncation
}

TEST(TlsStream, PeerClosingWithoutCloseNotifyIsAnEndOfStream) {
  auto ctx = context();
  Pair pair(*ctx, 64);
  pair.carry();
  ASSERT_TRUE(pair.server->handshake_done());
  pair.close_client_socket();  // no close_notify
  char buf[256];
  EXPECT_EQ(pair.server->read(buf, sizeof buf), 0);  // OpenSSL 3 would call it an error
}

TEST(TlsStream, PlainHttpIsAFailedHandshake) {
  auto ctx = context();
  Pair pair(*ctx, 1);
  pair.raw_client_send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  char buf[256];
  ssize_t n = pair.server->read(buf, sizeof buf);
  EXPECT_EQ(n, kFailed);
  EXPECT_EQ(errno, EPROTO);
  EXPECT_FALSE(pair.server->handshake_done());
  EXPECT_EQ(pair.server->tls_info(), nullptr);
}

TEST(TlsContext, ErrorsNameTheProblem) {
  std::string error;
  TlsOptions options;
  options.certfile = "/nonexistent/cert.pem";
  EXPECT_EQ(TlsContext::create(options, error), nullptr);
  EXPECT_NE(error.find("cannot load the certificate from /nonexistent/cert.pem"), std::string::npos) << error;
  options.certfile = certificate().cert;
  options.keyfile = certificate().key;
  options.ciphers = "NO-SUCH-CIPHER";
  EXPECT_EQ(TlsContext::create(options, error), nullptr);
  EXPECT_NE(error.find("invalid --ssl-ciphers"), std::string::npos) << error;
}

// ---- the read side: one recv() per read(), records held in user space ----

// A connection past its handshake, and `count` records of `size` bytes from
// the client, all on the server's socket. Returns their plaintext.
std::string records_on_socket(Pair &pair, int count, size_t size) {
  pair.carry();
  EXPECT_TRUE(pair.server->handshake_done());
  std::string all;
  for (int i = 0; i < count; ++i) {
    std::string record(size, static_cast<char>('a' + i % 26));
    pair.client_write(record);  // one SSL_write: one record
    all += record;
  }
  pair.send_to_server();
  return all;
}

TEST(TlsStream, ManySmallRecordsAreReadInOneCall) {
  auto ctx = context();
  Pair pair(*ctx, 100000);
  std::string sent = records_on_socket(pair, 100, 20);
  char buf[65536];
  ssize_t n = pair.server->read(buf, sizeof buf);
  // The socket BIO returned one record per call; now one recv() takes them all.
  ASSERT_EQ(n, static_cast<ssize_t>(sent.size()));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), sent);
  EXPECT_TRUE(pair.server_socket_empty());
  EXPECT_FALSE(pair.server->has_buffered_input());
  EXPECT_EQ(pair.server->read(buf, sizeof buf), kWouldBlock);
}

TEST(TlsStream, RecordsLeftByAFullBufferAreHeldAndSaidSo) {
  auto ctx = context();
  for (size_t room : {1u, 7u, 300u, 1000u}) {
    SCOPED_TRACE(room);
    Pair pair(*ctx, 100000);
    std::string sent = records_on_socket(pair, 100, 20);
    std::vector<char> buf(room);
    ssize_t n = pair.server->read(buf.data(), room);
    ASSERT_EQ(n, static_cast<ssize_t>(room));
    // Everything came in the first recv(): the rest is ours to hand out,
    // and no epoll event will say so.
    EXPECT_TRUE(pair.server_socket_empty());
    EXPECT_TRUE(pair.server->has_buffered_input());
    std::string got(buf.data(), room);
    while ((n = pair.server->read(buf.data(), room)) > 0) got.append(buf.data(), static_cast<size_t>(n));
    EXPECT_EQ(n, kWouldBlock);
    EXPECT_EQ(got, sent);
    EXPECT_FALSE(pair.server->has_buffered_input());
  }
}

TEST(TlsStream, CloseNotifyBehindDataInOneReadEndsTheStreamAfterIt) {
  auto ctx = context();
  Pair pair(*ctx, 100000);
  pair.carry();
  ASSERT_TRUE(pair.server->handshake_done());
  pair.client_write("last words");
  pair.client_shutdown();  // close_notify, in the same segment as the data
  pair.send_to_server();
  char buf[4096];
  ASSERT_EQ(pair.server->read(buf, sizeof buf), 10);
  EXPECT_EQ(std::string(buf, 10), "last words");
  EXPECT_TRUE(pair.server_socket_empty());
  EXPECT_TRUE(pair.server->has_buffered_input());  // the end is still to be reported
  EXPECT_EQ(pair.server->read(buf, sizeof buf), 0);
  EXPECT_FALSE(pair.server->has_buffered_input());
}

TEST(TlsStream, EndOfSocketBehindDataAndAFullBuffer) {
  auto ctx = context();
  Pair pair(*ctx, 100000);
  std::string sent = records_on_socket(pair, 10, 100);
  pair.close_client_socket();  // no close_notify: the recv() after the data says EOF
  char buf[64];
  std::string got;
  ssize_t n;
  while ((n = pair.server->read(buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(pair.server->has_buffered_input());
}

TEST(TlsStream, PartialRecordAtTheEndWaitsForTheSocket) {
  auto ctx = context();
  for (size_t cut : {1u, 5u, 6u, 30u}) {
    SCOPED_TRACE(cut);
    Pair pair(*ctx, 100000);
    pair.carry();
    ASSERT_TRUE(pair.server->handshake_done());
    pair.client_write(std::string(40, 'x'));
    pair.send_to_server();
    pair.client_write(std::string(40, 'y'));
    size_t second = pair.client_pending();
    ASSERT_GT(second, cut);
    pair.send_to_server(cut);  // the second record's first `cut` bytes
    char buf[4096];
    ASSERT_EQ(pair.server->read(buf, sizeof buf), 40);
    EXPECT_EQ(std::string(buf, 40), std::string(40, 'x'));
    // The part is inside OpenSSL: nothing to hand out until the socket has more.
    EXPECT_FALSE(pair.server->has_buffered_input());
    EXPECT_EQ(pair.server->read(buf, sizeof buf), kWouldBlock);
    pair.send_to_server();
    ASSERT_EQ(pair.server->read(buf, sizeof buf), 40);
    EXPECT_EQ(std::string(buf, 40), std::string(40, 'y'));
  }
}

TEST(TlsStream, ManyRecordsSplitAtEveryByteBoundary) {
  auto ctx = context();
  for (size_t piece : {1u, 2u, 3u, 7u, 64u, 1000u}) {
    SCOPED_TRACE(piece);
    Pair pair(*ctx, piece);
    pair.carry();
    ASSERT_TRUE(pair.server->handshake_done());
    std::string sent;
    for (int i = 0; i < 20; ++i) {
      std::string record(static_cast<size_t>(1 + i * 7), static_cast<char>('A' + i));
      pair.client_write(record);
      sent += record;
    }
    EXPECT_EQ(pair.carry(), sent);
  }
}

// Random record sizes, random cuts of the byte stream, random read sizes, and
// sometimes a close_notify at the end: whatever the mix, a read that says
// "would block" leaves nothing held (has_buffered_input() false: the epoll
// event for the next bytes is the only one coming), and every byte, then
// the end, comes out.
TEST(TlsStream, RandomRecordsCutsAndReadSizesNeverStrandInput) {
  auto ctx = context();
  uint32_t seed = 12345;
  auto next = [&seed](uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) % n;
  };
  for (int iteration = 0; iteration < 30; ++iteration) {
    SCOPED_TRACE(iteration);
    Pair pair(*ctx, 100000);
    pair.carry();
    ASSERT_TRUE(pair.server->handshake_done());
    std::string sent;
    int records = 1 + static_cast<int>(next(40));
    for (int i = 0; i < records; ++i) {
      std::string record(1 + next(i % 5 == 0 ? 20000 : 300), static_cast<char>('a' + next(26)));
      pair.client_write(record);
      sent += record;
    }
    bool close_notify = next(2) == 0;
    if (close_notify) pair.client_shutdown();
    std::string got;
    bool ended = false;
    std::vector<char> buf(70000);
    while (!ended) {
      size_t pending = pair.client_pending();
      if (pending > 0) pair.send_to_server(1 + next(static_cast<uint32_t>(std::min<size_t>(pending, 65536))));
      bool socket_done = pair.client_pending() == 0;
      if (socket_done && !close_notify && pair.client_open()) pair.close_client_socket();  // the end: EOF instead
      while (true) {
        size_t room = 1 + next(next(2) == 0 ? 64 : 70000);
        ssize_t n = pair.server->read(buf.data(), room);
        if (n > 0) {
          got.append(buf.data(), static_cast<size_t>(n));
          continue;
        }
        if (n == 0) {
          ended = true;
          break;
        }
        ASSERT_EQ(n, kWouldBlock);
        EXPECT_FALSE(pair.server->has_buffered_input());  // nothing stranded
        ASSERT_FALSE(socket_done) << "would block with every byte on the socket";
        break;
      }
    }
    EXPECT_EQ(got, sent);
    EXPECT_FALSE(pair.server->has_buffered_input());
  }
}

// ---- the transport: input held in user space reaches the session ----

// A session stand-in: reads `room` bytes per call, and stops reading (as a
// session whose app is busy) once `pause_after` bytes have come.
struct Reader final : TransportHandler {
  Transport *transport = nullptr;
  std::string got;
  size_t room = 100;
  size_t pause_after = SIZE_MAX;
  int calls = 0;
  bool ended = false;
  void on_readable() override {
    ++calls;
    std::vector<char> buf(room);
    ssize_t n = transport->read_into(buf.data(), room);
    if (n == 0) ended = true;
    if (n > 0) got.append(buf.data(), static_cast<size_t>(n));
    if (got.size() >= pause_after) transport->set_reading(false);
  }
  void on_output_progress() override {}
  void on_transport_failed() override { ended = true; }
};

struct TransportPair {
  Engine engine{EngineConfig{}};
  std::unique_ptr<TlsContext> ctx = context();
  Pair pair{*ctx, 100000};
  std::unique_ptr<Transport> transport;
  Reader reader;
  std::string sent;

  // Handshake done, then `count` records of `size` bytes on the socket.
  void start(int count, size_t size) {
    EXPECT_TRUE(engine.open());
    pair.carry();
    EXPECT_TRUE(pair.server->handshake_done());
    SocketAddress peer;
    transport = std::make_unique<Transport>(engine, std::move(pair.server), peer, &peer_);
    reader.transport = transport.get();
    transport->set_handler(&reader);
    EXPECT_TRUE(transport->start());
    for (int i = 0; i < count; ++i) {
      std::string record(size, static_cast<char>('a' + i % 26));
      pair.client_write(record);
      sent += record;
    }
    pair.send_to_server();
  }
  SocketAddress peer_;
};

TEST(TlsTransport, RecordsLeftInUserSpaceAreReadWithoutAnEvent) {
  TransportPair t;
  t.reader.room = 100;
  t.start(100, 50);  // 5,000 bytes: 50 reads of 100, more than one event's share
  for (int i = 0; i < 10 && t.reader.got.size() < t.sent.size(); ++i) {
    t.engine.run_once(0);
    if (i == 0) {
      EXPECT_TRUE(t.pair.server_socket_empty());  // all of it came in one recv()
    }
  }
  EXPECT_EQ(t.reader.got, t.sent);
}

TEST(TlsTransport, ReadingPausedWithRecordsHeldResumesWithoutAnEvent) {
  TransportPair t;
  t.reader.room = 4096;
  t.reader.pause_after = 1;
  t.start(100, 50);
  t.engine.run_once(0);
  ASSERT_EQ(t.reader.got.size(), 4096u);
  EXPECT_TRUE(t.pair.server_socket_empty());
  int calls = t.reader.calls;
  for (int i = 0; i < 3; ++i) t.engine.run_once(0);
  EXPECT_EQ(t.reader.calls, calls);  // not reading: not called
  // The app is done (its step, outside run_once): reading resumes, and the
  // records held reach the session with nothing new on the socket.
  t.reader.pause_after = SIZE_MAX;
  t.transport->set_reading(true);
  for (int i = 0; i < 3; ++i) t.engine.run_once(0);
  EXPECT_EQ(t.reader.got, t.sent);
}

TEST(TlsTransport, CloseNotifyBehindDataReachesTheSession) {
  TransportPair t;
  t.reader.room = 64;
  t.start(3, 100);
  t.pair.client_shutdown();
  t.pair.send_to_server();
  for (int i = 0; i < 3 && !t.reader.ended; ++i) t.engine.run_once(0);
  EXPECT_EQ(t.reader.got, t.sent);
  EXPECT_TRUE(t.reader.ended);
}

// ---- the read side against the peer's other records and a dirty error queue ----
TEST(TlsStream, ClientKeyUpdateAmongRecords) {
  auto ctx = context();
  for (size_t room : {1u, 3u, 100u, 65536u}) {
    SCOPED_TRACE(room);
    Pair pair(*ctx, 100000);
    pair.carry();
    ASSERT_TRUE(pair.server->handshake_done());
    pair.client_write("before");
    ASSERT_EQ(SSL_key_update(pair.client_ssl(), SSL_KEY_UPDATE_REQUESTED), 1);
    pair.client_write("after");
    pair.client_write("more");
    pair.send_to_server();
    std::vector<char> buf(room);
    std::string got;
    ssize_t n;
    while ((n = pair.server->read(buf.data(), room)) > 0) got.append(buf.data(), static_cast<size_t>(n));
    EXPECT_EQ(n, kWouldBlock);
    EXPECT_EQ(got, "beforeaftermore");
    EXPECT_FALSE(pair.server->has_buffered_input());
    pair.server->flush_pending();
    pair.to_client();
    int err = 0;
    pair.client_read(&err);
    EXPECT_EQ(err, SSL_ERROR_WANT_READ);
    // The server's answers are readable with the new keys.
    iovec iov{const_cast<char *>("reply"), 5};
    ASSERT_EQ(pair.server->writev(&iov, 1), 5);
    pair.to_client();
    EXPECT_EQ(pair.client_read(&err), "reply");
  }
}

TEST(TlsStream, StaleErrorInTheQueueDoesNotFailARead) {
  auto ctx = context();
  Pair pair(*ctx, 100000);
  pair.carry();
  ASSERT_TRUE(pair.server->handshake_done());
  pair.client_write("hello");
  pair.send_to_server();
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
  char buf[100];
  EXPECT_EQ(pair.server->read(buf, sizeof buf), 5);
  EXPECT_EQ(pair.server->read(buf, sizeof buf), kWouldBlock);
  ERR_raise(ERR_LIB_SYS, ECONNRESET);
  EXPECT_EQ(pair.server->read(buf, sizeof buf), kWouldBlock);
}

TEST(TlsStream, HandshakeFinishedAndRequestInOneRecvWithTinyReads) {
  auto ctx = context();
  for (size_t room : {1u, 5u}) {
    Pair pair(*ctx, 100000);
    pair.client_step();
    pair.to_server();  // ClientHello
    pair.to_client();
    pair.client_step();  // client Finished
    pair.client_write("GET / HTTP/1.1\r\n\r\n");
    pair.send_to_server();
    std::vector<char> buf(room);
    std::string got;
    ssize_t n;
    while ((n = pair.server->read(buf.data(), room)) > 0) got.append(buf.data(), static_cast<size_t>(n));
    EXPECT_EQ(n, kWouldBlock);
    EXPECT_EQ(got, "GET / HTTP/1.1\r\n\r\n");
    EXPECT_FALSE(pair.server->has_buffered_input());
  }
}

// Random records, cuts, read sizes and pauses (inside the session's call, as
// a full body buffer stops reading, and resumed outside run_once, as an app's
// step does): every byte and the end reach the session, with no event but
// the socket's and the engine's own turns.
TEST(TlsTransport, RandomPausesNeverStrandInput) {
  uint32_t seed = 777;
  auto next = [&seed](uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) % n;
  };
  for (int iteration = 0; iteration < 25; ++iteration) {
    SCOPED_TRACE(iteration);
    TransportPair t;
    t.start(0, 0);
    std::string sent;
    int records = 1 + static_cast<int>(next(60));
    for (int i = 0; i < records; ++i) {
      std::string record(1 + next(i % 4 == 0 ? 16384 : 400), static_cast<char>('a' + next(26)));
      t.pair.client_write(record);
      sent += record;
    }
    // The end comes as close_notify: a socketpair whose peer closes reports
    // EPOLLHUP, which a paused session takes as the connection failing (a
    // TCP peer's FIN does not).
    t.pair.client_shutdown();
    struct PausingReader final : TransportHandler {
      Transport *transport = nullptr;
      std::string got;
      bool ended = false;
      bool paused = false;
      std::function<uint32_t(uint32_t)> rnd;
      void on_readable() override {
        ASSERT_FALSE(paused);
        size_t room = 1 + rnd(rnd(2) == 0 ? 50 : 70000);
        std::vector<char> buf(room);
        ssize_t n = transport->read_into(buf.data(), room);
        if (n == 0 || n == kFailed) ended = true;
        if (n > 0) got.append(buf.data(), static_cast<size_t>(n));
        if (rnd(4) == 0) {
          paused = true;
          transport->set_reading(false);
        }
      }
      void on_output_progress() override {}
      void on_transport_failed() override {
        ended = true;
        failed = true;
      }
      bool failed = false;
    } reader;
    reader.transport = t.transport.get();
    reader.rnd = next;
    t.transport->set_handler(&reader);
    for (int turn = 0; turn < 5000 && !reader.ended; ++turn) {
      size_t pending = t.pair.client_pending();
      if (pending > 0 && next(3) == 0)
        t.pair.send_to_server(1 + next(static_cast<uint32_t>(std::min<size_t>(pending, 100000))));
      t.engine.run_once(0);
      if (reader.paused && next(2) == 0) {
        reader.paused = false;
        t.transport->set_reading(true);  // outside run_once: an app's step
      }
    }
    EXPECT_TRUE(reader.ended);
    EXPECT_FALSE(reader.failed);
    EXPECT_EQ(reader.got.size(), sent.size());
    EXPECT_TRUE(reader.got == sent);
  }
}
}  // namespace
}  // namespace pronghorn
