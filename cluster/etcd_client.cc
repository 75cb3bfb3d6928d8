#include "cluster/etcd_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/json_fields.h"

namespace foresight {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The gateway prints int64 fields as JSON strings; absent fields mean 0.
int64_t Int64Field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return 0;
  if (it->is_string()) return std::strtoll(it->get<std::string>().c_str(), nullptr, 10);
  if (it->is_number()) return it->get<int64_t>();
  return 0;
}

// The smallest key greater than every key that starts with `prefix` (etcd's range_end).
std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char c = static_cast<unsigned char>(end.back());
    if (c < 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// Closes the descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

int RemainingMs(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(ms);
}

StatusOr<std::string> DecodeChunked(const std::string& body, const std::string& url) {
  std::string out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t len = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
    if (len == 0) return out;
    pos = eol + 2;
    if (pos + len > body.size()) return Unavailable("truncated chunked response from etcd " + url);
    out.append(body, pos, len);
    pos += len + 2;
  }
  return out;
}

}  // namespace

std::string EtcdClient::Base64Encode(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

StatusOr<std::string> EtcdClient::Base64Decode(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) return InvalidArgument("invalid base64 character in etcd response: '" + std::string(1, c) + "'");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(const std::string& endpoints,
                                                         std::chrono::milliseconds timeout) {
  std::unique_ptr<EtcdClient> client(new EtcdClient());
  client->endpoints_text_ = endpoints;
  client->timeout_ = timeout;
  std::stringstream ss(endpoints);
  std::string url;
  while (std::getline(ss, url, ',')) {
    if (url.empty()) continue;
    std::string rest = url;
    if (rest.rfind("https://", 0) == 0)
      return InvalidArgument("etcd endpoint " + url + ": https is not supported; use http:// (TLS via a local proxy)");
    if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return InvalidArgument("etcd endpoint '" + url + "' must be http://HOST:PORT");
    char* end = nullptr;
    const long port = std::strtol(rest.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) return InvalidArgument("etcd endpoint '" + url + "': bad port");
    client->endpoints_.push_back({rest.substr(0, colon), static_cast<uint16_t>(port), url});
  }
  if (client->endpoints_.empty()) return InvalidArgument("no etcd endpoint given (expected http://HOST:PORT)");
  return client;
}

StatusOr<std::string> EtcdClient::CallOne(const Endpoint& e, const std::string& path, const std::string& body) {
  const auto deadline = Clock::now() + timeout_;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res); rc != 0)
    return Unavailable("etcd " + e.url + ": cannot resolve " + e.host + ": " + gai_strerror(rc));
  Fd sock;
  std::string last_error = "no address";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, RemainingMs(deadline)) == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) {
      sock.fd = fd;
      break;
    }
    last_error = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  if (sock.fd < 0) return Unavailable("etcd " + e.url + " unreachable: " + last_error);
  int one = 1;
  setsockopt(sock.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  std::string request = "POST " + path + " HTTP/1.1\r\nHost: " + e.host + ":" + std::to_string(e.port) +
                        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\nConnection: close\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd p{sock.fd, POLLOUT, 0};
      if (poll(&p, 1, RemainingMs(deadline)) != 1) return DeadlineExceeded("etcd " + e.url + path + ": send timed out");
      continue;
    }
    return Unavailable("etcd " + e.url + path + ": send failed: " + std::strerror(errno));
  }
  std::string response;
  char buffer[16384];
  while (true) {
    pollfd p{sock.fd, POLLIN, 0};
    const int ready = poll(&p, 1, RemainingMs(deadline));
    if (ready == 0)
      return DeadlineExceeded("etcd " + e.url + path + ": no answer within " + std::to_string(timeout_.count()) +
                              " ms");
    if (ready < 0 && errno == EINTR) continue;
    ssize_t n = recv(sock.fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Unavailable("etcd " + e.url + path + ": receive failed: " + std::strerror(errno));
    }
    response.append(buffer, static_cast<size_t>(n));
  }
  const auto header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos || response.rfind("HTTP/1.", 0) != 0)
    return Unavailable("etcd " + e.url + path + ": malformed HTTP response");
  const std::string headers = response.substr(0, header_end);
  std::string payload = response.substr(header_end + 4);
  const int code = std::atoi(headers.c_str() + headers.find(' ') + 1);
  std::string lower = headers;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("transfer-encoding: chunked") != std::string::npos) {
    FS_ASSIGN_OR_RETURN(payload, DecodeChunked(payload, e.url));
  }
  if (code != 200) {
    std::string message = payload;
    auto j = nlohmann::json::parse(payload, nullptr, false);
    if (!j.is_discarded() && j.is_object()) {
      if (j.contains("message") && j["message"].is_string())
        message = j["message"].get<std::string>();
      else if (j.contains("error") && j["error"].is_string())
        message = j["error"].get<std::string>();
    }
    // 503 and friends: the member is up but cannot serve (no leader); another endpoint may.
    const std::string text = "etcd " + e.url + path + ": HTTP " + std::to_string(code) + ": " + message;
    if (code >= 500) return Unavailable(text);
    return FailedPrecondition(text);
  }
  return payload;
}

StatusOr<std::string> EtcdClient::Call(const std::string& path, const std::string& body) {
  Status last;
  for (const Endpoint& e : endpoints_) {
    auto r = CallOne(e, path, body);
    if (r.ok()) return r;
    last = r.status();
    if (last.code() == StatusCode::kFailedPrecondition) return last;  // etcd refused: same on every member
  }
  if (endpoints_.size() == 1) return last;
  return Unavailable("no etcd endpoint of " + endpoints_text_ + " answered; last: " + last.message());
}

namespace {

StatusOr<nlohmann::json> ParseJson(const std::string& text, const std::string& what) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Internal("etcd " + what + ": response is not JSON: " + text.substr(0, 200));
  // Streaming endpoints wrap each message in {"result": ...} or {"error": ...}.
  if (j.contains("error") && j["error"].is_object()) {
    const auto& err = j["error"];
    auto field = JsonField<std::string>(err, "message", "");
    const std::string message = field.ok() && !field->empty() ? *field : err.dump();
    return Unavailable("etcd " + what + ": " + message);
  }
  if (j.contains("result") && j["result"].is_object()) return j["result"];
  return j;
}

}  // namespace

Status EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  nlohmann::json req = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) req["lease"] = std::to_string(lease);
  auto r = Call("/v3/kv/put", req.dump());
  if (!r.ok()) return r.status().WithContext("put " + key);
  auto j = ParseJson(*r, "put " + key);
  return j.ok() ? Status::OK() : j.status();
}

static StatusOr<EtcdRange> ParseRange(const nlohmann::json& j, const std::string& what) {
  EtcdRange range;
  if (j.contains("header")) range.revision = Int64Field(j["header"], "revision");
  if (j.contains("kvs")) {
    for (const auto& kv : j["kvs"]) {
      EtcdKeyValue out;
      for (auto [name, field] : {std::pair{"key", &out.key}, std::pair{"value", &out.value}}) {
        auto encoded = JsonField<std::string>(kv, name, "");
        if (!encoded.ok()) return encoded.status().WithContext("etcd " + what);
        FS_ASSIGN_OR_RETURN(*field, EtcdClient::Base64Decode(*encoded));
      }
      out.mod_revision = Int64Field(kv, "mod_revision");
      out.lease = Int64Field(kv, "lease");
      range.kvs.push_back(std::move(out));
    }
  }
  return range;
}

StatusOr<EtcdKeyValue> EtcdClient::Get(const std::string& key) {
  nlohmann::json req = {{"key", Base64Encode(key)}};
  auto r = Call("/v3/kv/range", req.dump());
  if (!r.ok()) return r.status().WithContext("get " + key);
  FS_ASSIGN_OR_RETURN(auto j, ParseJson(*r, "get " + key));
  FS_ASSIGN_OR_RETURN(auto range, ParseRange(j, "get " + key));
  if (range.kvs.empty()) return NotFound("etcd key " + key + " does not exist");
  return range.kvs.front();
}

StatusOr<EtcdRange> EtcdClient::RangePrefix(const std::string& prefix) {
  nlohmann::json req = {{"key", Base64Encode(prefix)}, {"range_end", Base64Encode(PrefixEnd(prefix))}};
  auto r = Call("/v3/kv/range", req.dump());
  if (!r.ok()) return r.status().WithContext("range " + prefix + "*");
  FS_ASSIGN_OR_RETURN(auto j, ParseJson(*r, "range " + prefix));
  return ParseRange(j, "range " + prefix);
}

StatusOr<int64_t> EtcdClient::Delete(const std::string& key) {
  nlohmann::json req = {{"key", Base64Encode(key)}};
  auto r = Call("/v3/kv/deleterange", req.dump());
  if (!r.ok()) return r.status().WithContext("delete " + key);
  FS_ASSIGN_OR_RETURN(auto j, ParseJson(*r, "delete " + key));
  return Int64Field(j, "deleted");
}

StatusOr<int64_t> EtcdClient::GrantLease(int64_t ttl_seconds) {
  nlohmann::json req = {{"TTL", std::to_string(ttl_seconds)}};
  auto r = Call("/v3/lease/grant", req.dump());
  if (!r.ok()) return r.status().WithContext("grant lease");
  FS_ASSIGN_OR_RETURN(auto j, ParseJson(*r, "grant lease"));
  if (j.contains("error") && j["error"].is_string() && !j["error"].get<std::string>().empty())
    return Unavailable("etcd grant lease: " + j["error"].get<std::string>());
  const int64_t id = Int64Field(j, "ID");
  if (id == 0) return Internal("etcd grant lease: no lease id in " + *r);
  return id;
}

StatusOr<int64_t> EtcdClient::KeepAliveOnce(int64_t lease) {
  nlohmann::json req = {{"ID", std::to_string(lease)}};
  auto r = Call("/v3/lease/keepalive", req.dump());
  if (!r.ok()) return r.status().WithContext("keep lease " + std::to_string(lease) + " alive");
  FS_ASSIGN_OR_RETURN(auto j, ParseJson(*r, "keepalive"));
  const int64_t ttl = Int64Field(j, "TTL");
  if (ttl <= 0) return NotFound("etcd lease " + std::to_string(lease) + " has expired or was revoked");
  return ttl;
}

Status EtcdClient::RevokeLease(int64_t lease) {
  nlohmann::json req = {{"ID", std::to_string(lease)}};
  auto r = Call("/v3/lease/revoke", req.dump());
  if (!r.ok()) return r.status().WithContext("revoke lease " + std::to_string(lease));
  auto j = ParseJson(*r, "revoke lease");
  return j.ok() ? Status::OK() : j.status();
}

}  // namespace foresight
