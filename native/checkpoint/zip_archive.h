// Read-only view of a zip archive of STORED (uncompressed) entries, as
// written by torch.save. Only the central directory is read up front; entry
// data is located through each entry's local header on demand, so opening a
// multi-gigabyte checkpoint touches a few kilobytes.
//
// Handles ZIP64 (the end-of-central-directory locator and record, and zip64
// extra fields in central headers). Every offset and size taken from the file
// is checked against the file size before use, so a damaged or hostile archive
// produces a CheckpointError, never an out-of-range read or a huge allocation.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "checkpoint/checkpoint_reader.h"  // CheckpointError

namespace qwen3 {

struct ZipEntry {
  std::string name;               // full name inside the archive, e.g. "model/data/0"
  uint16_t flags = 0;
  uint16_t method = 0;            // always 0 (STORED); anything else is rejected on open
  uint64_t size = 0;              // compressed == uncompressed size for STORED entries
  uint64_t local_header_offset = 0;
};

class ZipArchive {
 public:
  // Opens `path` and reads its central directory. Errors name the file by `path`.
  explicit ZipArchive(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when the archive has no entry with exactly this name.
  const ZipEntry* find(const std::string& name) const;

  // Absolute file offset of the entry's first data byte, from its LOCAL header
  // (whose extra field can differ from the central one: torch pads it so data
  // starts on a 64-byte boundary). Checks that all of the data lies inside the
  // file; `label` is how the entry is named in errors, e.g. "data/3".
  uint64_t data_offset(const ZipEntry& entry, const std::string& label);

  // Reads the entry's whole data; refuses entries larger than `max_bytes`.
  std::string read_entry(const ZipEntry& entry, const std::string& label, uint64_t max_bytes);

 private:
  void read_at(uint64_t offset, void* out, size_t length);
  [[noreturn]] void fail(const std::string& problem) const;
  // Where the central directory is (from the end records, zip64 or not), checked against the file.
  struct Directory {
    uint64_t offset = 0, size = 0, entries = 0;
    uint64_t limit = 0;  // the directory must end before this byte (the end record after it)
  };
  Directory find_central_directory();
  // One central-directory header h (with its name and extra field), checked; local headers must
  // lie before cd_offset.
  ZipEntry parse_entry(const unsigned char* h, size_t name_len, size_t extra_len, uint64_t cd_offset);
  void read_central_directory();

  std::string path_;
  std::ifstream file_;
  uint64_t file_size_ = 0;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_by_name_;
};

}  // namespace qwen3
