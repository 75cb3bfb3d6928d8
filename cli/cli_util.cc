#include "cli/cli_util.h"

#include <iostream>

#include "common/file_io.h"

namespace foresight::cli {

int Fail(const Status& s) {
  std::cerr << "foresight: " << s.message() << " [" << StatusCodeName(s.code()) << "]\n";
  return 1;
}

Status WriteOutput(const std::string& file, std::string_view data) {
  if (file != "-") return WriteWholeFile(file, data);
  std::cout.write(data.data(), static_cast<std::streamsize>(data.size()));
  std::cout.flush();
  return std::cout ? Status::OK() : Unavailable("cannot write to stdout");
}

}  // namespace foresight::cli
