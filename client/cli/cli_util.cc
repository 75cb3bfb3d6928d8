#include "client/cli/cli_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

namespace foresight::cli {
namespace {

Status FileError(const std::string& verb, const std::string& what, int error) {
  const std::string text = "cannot " + verb + " " + what + ": " + std::strerror(error);
  if (error == ENOENT) return NotFound(text);
  if (error == EACCES || error == EPERM) return PermissionDenied(text);
  if (error == EISDIR) return InvalidArgument(text);
  return Unavailable(text);
}

}  // namespace

int Fail(const Status& s) {
  std::cerr << "foresight: " << s.message() << " [" << StatusCodeName(s.code()) << "]\n";
  return 1;
}

StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  const std::string& name = what.empty() ? path : what;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError("read", name, errno);
  struct stat st {};
  if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    const int error = S_ISDIR(st.st_mode) ? EISDIR : errno;
    close(fd);
    return FileError("read", name, error);
  }
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      close(fd);
      return FileError("read", name, error);
    }
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return data;
}

Status WriteWholeFile(const std::string& path, std::string_view data) {
  if (path == "-") {
    std::cout.write(data.data(), static_cast<std::streamsize>(data.size()));
    std::cout.flush();
    return std::cout ? Status::OK() : Unavailable("cannot write to stdout");
  }
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return FileError("write", path, errno != 0 ? errno : EIO);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return FileError("write", path, errno != 0 ? errno : EIO);
  return Status::OK();
}

StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto token = ReadWholeFile(path, "--token-file " + path);
  if (!token.ok()) return token.status();
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r' || token->back() == ' ')) {
    token->pop_back();
  }
  return token;
}

}  // namespace foresight::cli
