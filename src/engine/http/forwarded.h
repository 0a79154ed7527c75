// Proxy headers (X-Forwarded-For, X-Forwarded-Proto) and whom to trust with
// them (--forwarded-allow-ips): protocol-neutral rules, written once for
// every protocol's exchanges. No I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/net/listener.h"

namespace pronghorn::http {

class ForwardedTrust {
 public:
  // Parses a comma-separated list of IPs and networks ("*": everyone).
  // Returns false with `error` set for a network with an impossible prefix;
  // entries that are not addresses (uvicorn accepts host names, which never
  // match a peer) are skipped, each named in `ignored`.
  bool parse(std::string_view spec, std::string &error, std::vector<std::string> &ignored);
  // Whether proxy headers from this peer count (never for a Unix socket
  // peer unless everyone is trusted).
  bool trusted(const SocketAddress &peer) const;
  // The client an X-Forwarded-For list names: the nearest address, from the
  // right, that is not a trusted proxy (the leftmost when everyone is
  // trusted); empty when the list is.
  std::string_view client(std::string_view forwarded_for) const;
  // X-Forwarded-Proto says https (or wss).
  static bool secure_proto(std::string_view forwarded_proto);
  // X-Forwarded-Proto says http (or ws).
  static bool plain_proto(std::string_view forwarded_proto);

 private:
  struct Network {
    int family;
    unsigned char addr[16];
    int prefix;
  };
  bool trusted_address(std::string_view host) const;
  bool trust_all_ = false;
  std::vector<Network> networks_;
};

}  // namespace pronghorn::http
