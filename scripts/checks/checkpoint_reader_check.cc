// Test driver for native/checkpoint/checkpoint_reader (built and run by
// scripts/checks/checkpoint_reader_check.sh under ASan + UBSan).
//
//   dump <file>                       print the index as one JSON object per line
//   expect-error <file> <substring>   pass iff reading throws CheckpointError containing <substring>
//   mutate-file <file> <iters> <seed> corrupt the file at random, <iters> times; every outcome
//                                     must be a valid index or a CheckpointError
//   mutate-pickle <file> <iters> <seed>  same, for data.pkl fed straight to the pickle reader
//   stress                            hand-made hostile pickles that must fail cleanly and
//                                     within the documented limits
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/state_dict_pickle.h"
#include "checkpoint/zip_archive.h"

using namespace qwen3;
using namespace std::string_literals;

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);  // UTF-8 passes through; the reader has validated it
    }
  }
  return out + "\"";
}

std::string json_ints(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out + "]";
}

int dump(const std::string& path) {
  try {
    for (const TensorRecord& t : read_checkpoint_index(path)) {
      std::cout << "{\"name\":" << json_string(t.name) << ",\"dtype\":\"" << stored_dtype_name(t.dtype)
                << "\",\"shape\":" << json_ints(t.shape) << ",\"stride\":" << json_ints(t.stride)
                << ",\"storage_offset\":" << t.storage_offset << ",\"storage_key\":" << json_string(t.storage_key)
                << ",\"data_offset\":" << t.data_offset << ",\"storage_bytes\":" << t.storage_bytes << "}\n";
    }
  } catch (const CheckpointError& e) {
    std::cout << "ERROR " << e.what() << "\n";
    return 2;
  }
  return 0;
}

int expect_error(const std::string& path, const std::string& needle) {
  try {
    read_checkpoint_index(path);
  } catch (const CheckpointError& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return 0;
    std::cout << "wrong error for " << path << "\n  wanted: " << needle << "\n  got:    " << e.what() << "\n";
    return 1;
  }
  std::cout << "no error for " << path << " (wanted: " << needle << ")\n";
  return 1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A few byte-level corruptions, biased towards the small structures that
// matter (headers, lengths, opcodes) by favouring "interesting" values.
void mutate(std::string& s, std::mt19937_64& rng) {
  static const unsigned char kInteresting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, '(', 't', 'R', 'q', 'h', 'K'};
  const int rounds = 1 + int(rng() % 4);
  for (int r = 0; r < rounds && !s.empty(); ++r) {
    const size_t at = rng() % s.size();
    switch (rng() % 7) {
      case 0: s[at] = char(uint8_t(s[at]) ^ (1u << (rng() % 8))); break;
      case 1: s[at] = char(kInteresting[rng() % sizeof kInteresting]); break;
      case 2: s[at] = char(rng()); break;
      case 3: s.erase(at, 1 + rng() % 8); break;
      case 4: s.insert(at, std::string(1 + rng() % 8, char(rng()))); break;
      case 5: s.resize(at); break;
      case 6: {  // overwrite with a copy of another piece, e.g. a repeated opcode run
        const size_t from = rng() % s.size(), len = 1 + rng() % 16;
        const std::string piece = s.substr(from, len);
        s.replace(at, std::min(len, s.size() - at), piece);
        break;
      }
    }
  }
}

int run_mutations(const std::string& label, const std::string& original, long iterations, uint64_t seed,
                  const std::function<size_t(const std::string&)>& read) {
  std::mt19937_64 rng(seed);
  long ok = 0, rejected = 0;
  for (long i = 0; i < iterations; ++i) {
    std::string s = original;
    mutate(s, rng);
    try {
      read(s);
      ++ok;
    } catch (const CheckpointError&) {
      ++rejected;
    }  // anything else escapes and fails the run
  }
  std::cout << label << ": " << iterations << " mutants, " << ok << " still readable, " << rejected
            << " rejected with CheckpointError\n";
  return 0;
}

int mutate_file(const std::string& path, long iterations, uint64_t seed) {
  const std::string original = read_file(path), scratch = path + ".mutant";
  return run_mutations("mutate-file " + path, original, iterations, seed, [&](const std::string& s) {
    std::ofstream(scratch, std::ios::binary | std::ios::trunc) << s;
    return read_checkpoint_index(scratch).size();
  });
}

int mutate_pickle(const std::string& path, long iterations, uint64_t seed) {
  ZipArchive zip(path);
  std::string pickle;
  for (const ZipEntry& e : zip.entries()) {
    if (e.name.size() >= 9 && e.name.compare(e.name.size() - 9, 9, "/data.pkl") == 0) {
      pickle = zip.read_entry(e, "data.pkl", 1 << 20);
    }
  }
  return run_mutations("mutate-pickle " + path, pickle, iterations, seed,
                       [&](const std::string& s) { return parse_state_dict_pickle(s, "mutant").size(); });
}

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::string le32(uint32_t v) {
  return std::string{char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
}

int stress() {
  const std::string P = "\x80\x02";
  struct Case {
    const char* what;
    std::string pickle;
    const char* expected;
  };
  std::string memo_flood = P + "N";
  for (uint32_t i = 0; i <= kPickleMaxMemo; ++i) memo_flood += "r" + le32(i);
  // One list, filled through BINGET in batches until the item cap is passed.
  const std::string item_flood =
      P + "]q\x00"s + repeat("(" + repeat("h\x00"s, 1000) + "e", kPickleMaxContainerItems / 1000 + 1);
  // Many distinct names for nothing: caught by the entry cap before any per-entry work.
  std::string entry_flood = P + "}";
  for (uint32_t i = 0; i <= kPickleMaxEntries; ++i) {
    const std::string key = std::to_string(i);
    entry_flood += "\x8c" + std::string(1, char(key.size())) + key + "Ns";
  }
  entry_flood += ".";
  const std::vector<Case> cases = {
      {"empty pickle", "", "ends without a STOP"},
      {"STOP on empty stack", ".", "stack underflow"},
      {"protocol 6", "\x80\x06}.", "protocol 6 is not supported"},
      {"unknown opcode", P + "}\xff.", "unknown or unsupported pickle opcode 0xff at byte 3"},
      {"POP is not needed by torch.save", P + "}0.", "opcode 0x30 at byte 3"},
      {"disallowed GLOBAL wins over later garbage", P + "cposix\nsystem\n\xff",
       "disallowed global 'posix.system'"},
      {"builtins.eval", P + "cbuiltins\neval\n", "disallowed global 'builtins.eval'"},
      {"old _rebuild_tensor", P + "ctorch._utils\n_rebuild_tensor\n", "disallowed global 'torch._utils._rebuild_tensor'"},
      {"STACK_GLOBAL os.system", "\x80\x04\x8c\x02os\x8c\x06system\x93", "disallowed global 'os.system'"},
      {"double storage", P + "ctorch\nDoubleStorage\n", "unsupported dtype (torch.DoubleStorage)"},
      {"control bytes in a global name are escaped", P + "cx\x01\ny\n", "disallowed global 'x\\x01.y'"},
      {"GLOBAL without newline", P + "cos", "not terminated by a newline"},
      {"STACK_GLOBAL of non-strings", P + "NN\x93", "STACK_GLOBAL name must be of type str, not None"},
      {"REDUCE of a non-global", P + "})R", "REDUCE callable must be of type global, not dict"},
      {"OrderedDict with arguments", P + "ccollections\nOrderedDict\nN\x85R", "OrderedDict must be created empty"},
      {"calling a storage type", P + "ctorch\nFloatStorage\n)R", "storage type cannot be called"},
      {"parameter of a non-tensor", P + "ctorch._utils\n_rebuild_parameter\nN\x89}\x87R", "parameter data must be of type tensor, not None"},
      {"BUILD on a plain dict", P + "}}b.", "BUILD is only supported on an OrderedDict"},
      {"APPEND below a MARK", P + "](Na", "stack underflow"},
      {"SETITEMS with a dangling key", P + "}(Nu", "key without a value"},
      {"invalid UTF-8", P + "X\x01\x00\x00\x00\xff"s, "not valid UTF-8"},
      {"BINUNICODE8 claiming 2^63 bytes", P + "\x8d\0\0\0\0\0\0\0\x80"s, "pickle is truncated"},
      {"BINUNICODE claiming 4 GiB", P + "X\xff\xff\xff\xff", "pickle is truncated"},
      {"LONG1 wider than 64 bits", P + "\x8a\x09" + std::string(9, '\x01'), "does not fit in 64 bits"},
      {"BINGET of a missing entry", P + "h\x07", "memo entry 7 that was never stored"},
      {"top level is a tuple nested a million deep", P + ")" + std::string(1000000, '\x85') + ".",
       "holds a value of type tuple, not a state dict"},
      {"top level is a list containing itself", P + "]q\x00h\x00" "a."s, "holds a value of type list, not a state dict"},
      {"dict with a non-str key", P + "}K\x01Ns.", "keys must be of type str, not int"},
      {"dict entry that is not a tensor", P + "}X\x01\x00\x00\x00" "aNs."s, "entry 'a' holds a value of type None, not a tensor"},
      {"values left on the stack", P + "N}.", "values left on the stack"},
      {"stack flood", P + std::string(kPickleMaxStack + 1, 'N'), "stack grows beyond"},
      {"MARK flood", P + std::string(kPickleMaxStack + 1, '('), "too many MARKs"},
      {"memo flood", memo_flood, "memo grows beyond"},
      {"value flood", P + ")" + std::string(kPickleMaxValues, '\x85'), "creates more than"},
      {"container item flood", item_flood, "too many items"},
      {"state dict entry flood", entry_flood, "state dict has more than 1048576 entries"},
  };
  int failures = 0;
  for (const Case& c : cases) {
    try {
      parse_state_dict_pickle(c.pickle, "stress.pth");
      std::cout << "FAIL " << c.what << ": no error\n";
      ++failures;
    } catch (const CheckpointError& e) {
      if (std::string(e.what()).find(c.expected) == std::string::npos) {
        std::cout << "FAIL " << c.what << ":\n  wanted: " << c.expected << "\n  got:    " << e.what() << "\n";
        ++failures;
      }
    }
  }
  if (std::string(stored_dtype_name(StoredDtype::BFloat16)) != "bfloat16" || stored_dtype_size(StoredDtype::Float32) != 4 ||
      stored_dtype_size(StoredDtype::Float16) != 2 || stored_dtype_size(StoredDtype::BFloat16) != 2) {
    std::cout << "FAIL dtype helpers\n";
    ++failures;
  }
  std::cout << "stress: " << cases.size() << " hostile pickles, " << failures << " failures\n";
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 2 && a[0] == "dump") return dump(a[1]);
  if (a.size() == 3 && a[0] == "expect-error") return expect_error(a[1], a[2]);
  if (a.size() == 4 && a[0] == "mutate-file") return mutate_file(a[1], std::atol(a[2].c_str()), std::stoull(a[3]));
  if (a.size() == 4 && a[0] == "mutate-pickle") return mutate_pickle(a[1], std::atol(a[2].c_str()), std::stoull(a[3]));
  if (a.size() == 1 && a[0] == "stress") return stress();
  std::cerr << "usage: checkpoint_reader_check dump|expect-error|mutate-file|mutate-pickle|stress ...\n";
  return 64;
}
