#include "common/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace foresight {
namespace {

Status FileError(const std::string& verb, const std::string& what, int error) {
  const std::string text = "cannot " + verb + " " + what + ": " + std::strerror(error);
  if (error == ENOENT) return NotFound(text);
  if (error == EACCES || error == EPERM) return PermissionDenied(text);
  if (error == EISDIR) return InvalidArgument(text);
  return Unavailable(text);
}

}  // namespace

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
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return FileError("write", path, errno != 0 ? errno : EIO);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return FileError("write", path, errno != 0 ? errno : EIO);
  return Status::OK();
}

StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag) {
  auto text = ReadWholeFile(path, flag + " " + path);
  if (!text.ok()) return text.status();
  while (!text->empty() && (text->back() == '\n' || text->back() == '\r' || text->back() == ' ')) text->pop_back();
  if (text->empty()) return InvalidArgument(flag + " " + path + " is empty");
  return text;
}

}  // namespace foresight
