#include "engine/http/forwarded.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

#include "engine/text.h"

namespace pronghorn::http {

namespace {

bool parse_ip(std::string_view text, int &family, unsigned char *out) {
  char buf[INET6_ADDRSTRLEN + 1];
  if (text.size() >= sizeof buf) return false;
  memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  if (inet_pton(AF_INET, buf, out) == 1) {
    family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, buf, out) == 1) {
    family = AF_INET6;
    return true;
  }
  return false;
}

}  // namespace

bool ForwardedTrust::parse(std::string_view spec, std::string &error, std::vector<std::string> &ignored) {
  std::string_view rest = spec;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = trim_ows(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.empty()) continue;
    if (item == "*") {
      trust_all_ = true;
      continue;
    }
    Network net{};
    std::string_view ip = item;
    int prefix = -1;
    size_t slash = item.find('/');
    if (slash != std::string_view::npos) {
      ip = item.substr(0, slash);
      prefix = 0;
      for (char c : item.substr(slash + 1)) {
        if (c < '0' || c > '9' || prefix > 128) {
          prefix = 1000;
          break;
        }
        prefix = prefix * 10 + (c - '0');
      }
    }
    if (!parse_ip(ip, net.family, net.addr)) {
      ignored.emplace_back(item);
      continue;
    }
    int max = net.family == AF_INET ? 32 : 128;
    if (prefix == -1) prefix = max;
    if (prefix > max) {
      error = "invalid network in forwarded-allow-ips: " + std::string(item);
      return false;
    }
    net.prefix = prefix;
    networks_.push_back(net);
  }
  return true;
}

bool ForwardedTrust::trusted_address(std::string_view host) const {
  int family = 0;
  unsigned char addr[16];
  if (!parse_ip(host, family, addr)) return false;
  for (const Network &net : networks_) {
    if (net.family != family) continue;
    int bits = net.prefix;
    int i = 0;
    for (; bits >= 8; bits -= 8, ++i)
      if (addr[i] != net.addr[i]) break;
    if (bits >= 8) continue;
    if (bits == 0) return true;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - bits));
    if ((addr[i] & mask) == (net.addr[i] & mask)) return true;
  }
  return false;
}

bool ForwardedTrust::trusted(const SocketAddress &peer) const {
  if (trust_all_) return true;
  if (peer.is_unix) return false;
  return trusted_address(peer.host);
}

std::string_view ForwardedTrust::client(std::string_view forwarded_for) const {
  std::vector<std::string_view> hops;
  std::string_view rest = forwarded_for;
  while (true) {
    size_t comma = rest.find(',');
    std::string_view hop = trim_ows(rest.substr(0, comma));
    if (!hop.empty()) hops.push_back(hop);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (hops.empty()) return {};
  if (trust_all_) return hops.front();
  for (auto it = hops.rbegin(); it != hops.rend(); ++it)
    if (!trusted_address(*it)) return *it;
  return hops.front();
}

bool ForwardedTrust::secure_proto(std::string_view forwarded_proto) {
  std::string_view proto = trim_ows(forwarded_proto);
  return proto == "https" || proto == "wss";
}

bool ForwardedTrust::plain_proto(std::string_view forwarded_proto) {
  std::string_view proto = trim_ows(forwarded_proto);
  return proto == "http" || proto == "ws";
}

}  // namespace pronghorn::http
