// tests/support/temp_dir.hpp: a directory of its own for a test's files,
// removed with everything in it when the object goes.
#pragma once

#include <unistd.h>  // getpid

#include <filesystem>    // std::filesystem
#include <string>        // std::string
#include <system_error>  // std::error_code

namespace scalify_test {

/// $TMPDIR/<prefix>_<pid>, created if needed and removed at the end (one at a
/// time per prefix: two alive share the directory).
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    path = std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  /// The path of `name` in the directory.
  std::string file(const std::string& name) const { return (path / name).string(); }
};

}  // namespace scalify_test
