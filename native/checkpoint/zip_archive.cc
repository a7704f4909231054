#include "checkpoint/zip_archive.h"

#include <algorithm>
#include <limits>

namespace qwen3 {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndOfCentralDirSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;

constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndOfCentralDirSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kMaxCommentSize = 0xFFFF;

// A checkpoint's directory holds a few entries per tensor; 64 MiB is room for
// over a million entries and keeps a hostile size field from costing memory.
constexpr uint64_t kMaxCentralDirBytes = 64ull << 20;

// Fields are little-endian and unaligned; assemble them byte by byte.
uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

// True when [offset, offset + length) lies inside [0, limit); no overflow.
bool fits(uint64_t offset, uint64_t length, uint64_t limit) {
  return offset <= limit && length <= limit - offset;
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return b > std::numeric_limits<uint64_t>::max() - a ? std::numeric_limits<uint64_t>::max() : a + b;
}

}  // namespace

ZipArchive::ZipArchive(const std::string& path) : path_(path) {
  file_.open(path, std::ios::binary);
  if (!file_) throw CheckpointError("cannot open checkpoint " + path);
  file_.seekg(0, std::ios::end);
  std::streamoff end = file_.tellg();
  if (!file_ || end < 0) throw CheckpointError("cannot determine the size of checkpoint " + path);
  file_size_ = uint64_t(end);
  read_central_directory();
}

void ZipArchive::fail(const std::string& problem) const {
  throw CheckpointError(path_ + ": " + problem);
}

void ZipArchive::read_at(uint64_t offset, void* out, size_t length) {
  if (!fits(offset, length, file_size_)) {
    fail("checkpoint is truncated (a read of " + std::to_string(length) + " bytes at byte " +
         std::to_string(offset) + " passes the end of the file, which has " +
         std::to_string(file_size_) + " bytes)");
  }
  file_.clear();
  file_.seekg(std::streamoff(offset));
  file_.read(static_cast<char*>(out), std::streamsize(length));
  if (!file_ || size_t(file_.gcount()) != length) {
    fail("read of " + std::to_string(length) + " bytes at byte " + std::to_string(offset) + " failed");
  }
}

ZipArchive::Directory ZipArchive::find_central_directory() {
  // The end-of-central-directory record sits in the last 22 bytes plus an
  // optional comment of up to 64 KiB. Scan backwards and accept the first
  // signature whose comment length reaches exactly to the end of the file, so
  // a comment that happens to contain the signature cannot fool us.
  const uint64_t tail_size = std::min<uint64_t>(file_size_, kEndOfCentralDirSize + kMaxCommentSize);
  const uint64_t tail_start = file_size_ - tail_size;
  std::vector<unsigned char> tail(tail_size);
  if (tail_size > 0) read_at(tail_start, tail.data(), tail.size());

  bool found = false;
  size_t eocd = 0;
  for (size_t i = tail_size >= kEndOfCentralDirSize ? tail_size - kEndOfCentralDirSize + 1 : 0; i-- > 0;) {
    if (le32(&tail[i]) == kEndOfCentralDirSig &&
        i + kEndOfCentralDirSize + le16(&tail[i + 20]) == tail_size) {
      eocd = i;
      found = true;
      break;
    }
  }
  if (!found) {
    throw CheckpointError(path_ + " is not a PyTorch checkpoint (no zip end-of-central-directory record)");
  }
  const unsigned char* end = &tail[eocd];
  const uint64_t eocd_offset = tail_start + eocd;
  uint64_t disk = le16(end + 4), cd_disk = le16(end + 6);
  uint64_t entries_here = le16(end + 8);
  Directory dir;
  dir.entries = le16(end + 10);
  dir.size = le32(end + 12);
  dir.offset = le32(end + 16);
  // The central directory must end before whichever end record follows it.
  dir.limit = eocd_offset;

  // ZIP64: a locator right before the classic record points at the 64-bit
  // end record, whose counts and offsets replace the 16/32-bit ones. torch
  // writes both records even for tiny files.
  if (eocd_offset >= kZip64LocatorSize) {
    unsigned char loc[kZip64LocatorSize];
    read_at(eocd_offset - kZip64LocatorSize, loc, sizeof loc);
    if (le32(loc) == kZip64LocatorSig) {
      const uint64_t end64_offset = le64(loc + 8);
      if (le32(loc + 4) != 0 || le32(loc + 16) > 1) fail("multi-disk zip archives are not supported");
      if (!fits(end64_offset, kZip64EndSize, eocd_offset - kZip64LocatorSize)) {
        fail("zip64 end-of-central-directory locator points outside the file");
      }
      unsigned char end64[kZip64EndSize];
      read_at(end64_offset, end64, sizeof end64);
      if (le32(end64) != kZip64EndSig) fail("zip64 end-of-central-directory record is missing");
      disk = le32(end64 + 16);
      cd_disk = le32(end64 + 20);
      entries_here = le64(end64 + 24);
      dir.entries = le64(end64 + 32);
      dir.size = le64(end64 + 40);
      dir.offset = le64(end64 + 48);
      dir.limit = end64_offset;
    }
  }

  if (disk != 0 || cd_disk != 0 || entries_here != dir.entries) {
    fail("multi-disk zip archives are not supported");
  }
  if (!fits(dir.offset, dir.size, dir.limit)) {
    fail("checkpoint is truncated (the zip central directory at byte " + std::to_string(dir.offset) +
         " with " + std::to_string(dir.size) + " bytes does not fit before byte " + std::to_string(dir.limit) + ")");
  }
  if (dir.size > kMaxCentralDirBytes) fail("zip central directory is larger than 64 MiB");
  if (dir.entries > dir.size / kCentralHeaderSize) {
    fail("zip central directory claims " + std::to_string(dir.entries) + " entries but has only " +
         std::to_string(dir.size) + " bytes");
  }
  return dir;
}

ZipEntry ZipArchive::parse_entry(const unsigned char* h, size_t name_len, size_t extra_len, uint64_t cd_offset) {
  ZipEntry entry;
  entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
  entry.flags = le16(h + 8);
  entry.method = le16(h + 10);
  uint64_t compressed = le32(h + 20), uncompressed = le32(h + 24);
  uint64_t local_offset = le32(h + 42);
  uint32_t start_disk = le16(h + 34);

  // A 32-bit field of all ones means "the real value is in the zip64 extra
  // field"; the extra carries only those fields, in this fixed order.
  const bool need_uncompressed = uncompressed == 0xFFFFFFFFu, need_compressed = compressed == 0xFFFFFFFFu;
  const bool need_offset = local_offset == 0xFFFFFFFFu, need_disk = start_disk == 0xFFFFu;
  bool zip64_seen = false;
  const unsigned char* extra = h + kCentralHeaderSize + name_len;
  for (size_t at = 0; at + 4 <= extra_len;) {
    const uint16_t id = le16(extra + at), size = le16(extra + at + 2);
    if (size > extra_len - at - 4) fail("zip entry '" + entry.name + "' has a malformed extra field");
    if (id == kZip64ExtraId && !zip64_seen) {
      zip64_seen = true;
      const unsigned char* field = extra + at + 4;
      const size_t needed = 8 * (need_uncompressed + need_compressed + need_offset) + 4 * need_disk;
      if (size < needed) fail("zip entry '" + entry.name + "' has a truncated zip64 extra field");
      if (need_uncompressed) uncompressed = le64(field), field += 8;
      if (need_compressed) compressed = le64(field), field += 8;
      if (need_offset) local_offset = le64(field), field += 8;
      if (need_disk) start_disk = le32(field);
    }
    at += 4 + size;
  }
  if (!zip64_seen && (need_uncompressed || need_compressed || need_offset || need_disk)) {
    fail("zip entry '" + entry.name + "' needs a zip64 extra field but has none");
  }
  if (start_disk != 0) fail("multi-disk zip archives are not supported");
  // Records precede the directory; this also keeps later arithmetic on the
  // offset far from overflow.
  if (!fits(local_offset, kLocalHeaderSize + name_len, cd_offset)) {
    fail("zip entry '" + entry.name + "' has its local header at byte " + std::to_string(local_offset) +
         ", not before the central directory at byte " + std::to_string(cd_offset));
  }
  if (entry.flags & 1) fail("zip entry '" + entry.name + "' is encrypted");
  if (entry.method != 0) {
    fail("zip entry '" + entry.name + "' is compressed (method " + std::to_string(entry.method) +
         "); only stored entries are supported, as torch.save writes them");
  }
  if (compressed != uncompressed) {
    fail("zip entry '" + entry.name + "' is stored but its compressed and uncompressed sizes differ");
  }
  entry.size = uncompressed;
  entry.local_header_offset = local_offset;
  return entry;
}

void ZipArchive::read_central_directory() {
  const Directory dir = find_central_directory();
  std::vector<unsigned char> cd(dir.size);
  if (dir.size > 0) read_at(dir.offset, cd.data(), cd.size());
  size_t pos = 0;
  entries_.reserve(dir.entries);  // bounded by dir.size / 46 above
  for (uint64_t n = 0; n < dir.entries; ++n) {
    if (cd.size() - pos < kCentralHeaderSize || le32(&cd[pos]) != kCentralHeaderSig) {
      fail("zip central directory entry " + std::to_string(n) + " is malformed");
    }
    const unsigned char* h = &cd[pos];
    const size_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
    if (cd.size() - pos - kCentralHeaderSize < name_len + extra_len + comment_len) {
      fail("zip central directory entry " + std::to_string(n) + " runs past the directory's end");
    }
    ZipEntry entry = parse_entry(h, name_len, extra_len, dir.offset);
    if (!index_by_name_.emplace(entry.name, entries_.size()).second) {
      fail("zip archive has two entries named '" + entry.name + "'");
    }
    entries_.push_back(std::move(entry));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_by_name_.find(name);
  return it == index_by_name_.end() ? nullptr : &entries_[it->second];
}

uint64_t ZipArchive::data_offset(const ZipEntry& entry, const std::string& label) {
  unsigned char h[kLocalHeaderSize];
  if (!fits(entry.local_header_offset, kLocalHeaderSize, file_size_)) {
    fail("checkpoint is truncated (the header of record " + label + " at byte " +
         std::to_string(entry.local_header_offset) + " lies past the end of the file, which has " +
         std::to_string(file_size_) + " bytes)");
  }
  read_at(entry.local_header_offset, h, sizeof h);
  if (le32(h) != kLocalHeaderSig) fail("record " + label + " has no zip local header where the directory says");
  const size_t name_len = le16(h + 26), extra_len = le16(h + 28);
  if (le16(h + 8) != 0) fail("record " + label + " is compressed in its local header");
  // The local name must repeat the central one; a mismatch means the
  // directory points at the wrong place.
  std::string local_name(name_len, '\0');
  read_at(entry.local_header_offset + kLocalHeaderSize, &local_name[0], name_len);
  if (local_name != entry.name) fail("record " + label + " has a local header for a different name");

  // Sizes come from the central directory: torch streams its records, so the
  // local headers carry zero CRC and sizes (general-purpose flag bit 3) and the
  // real values follow the data in a descriptor.
  const uint64_t start = entry.local_header_offset + kLocalHeaderSize + name_len + extra_len;
  if (!fits(start, entry.size, file_size_)) {
    fail("checkpoint is truncated (record " + label + " ends at byte " +
         std::to_string(saturating_add(start, entry.size)) + " but the file has " +
         std::to_string(file_size_) + " bytes)");
  }
  return start;
}

std::string ZipArchive::read_entry(const ZipEntry& entry, const std::string& label, uint64_t max_bytes) {
  if (entry.size > max_bytes) {
    fail(label + " has " + std::to_string(entry.size) + " bytes; at most " + std::to_string(max_bytes) +
         " are accepted");
  }
  const uint64_t start = data_offset(entry, label);  // also proves the bytes exist
  std::string bytes(size_t(entry.size), '\0');
  if (!bytes.empty()) read_at(start, &bytes[0], bytes.size());
  return bytes;
}

}  // namespace qwen3
