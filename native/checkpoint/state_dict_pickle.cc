#include "checkpoint/state_dict_pickle.h"

#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace qwen3 {
namespace {

enum class Kind : uint8_t { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

// The only callables / classes a state dict needs.
enum class Global : uint8_t { OrderedDict, RebuildTensorV2, RebuildParameter, FloatStorage, HalfStorage, BFloat16Storage };

// One pickled value. Children are indices into the arena, never pointers, so
// self-references and million-deep nesting are harmless to build and to free.
struct Value {
  Kind kind = Kind::None;
  bool ordered = false;                   // Dict: made by OrderedDict() (accepts BUILD)
  Global global = Global::OrderedDict;    // Global
  StoredDtype dtype = StoredDtype::Float32;  // Storage
  int64_t number = 0;       // Bool/Int value; Float bit pattern; Storage numel; Tensor index
  std::string text;         // Str; Storage key
  std::vector<uint32_t> items;  // Tuple/List elements; Dict keys and values interleaved
};

// Makes untrusted bytes safe to put in an error message.
std::string printable(const std::string& s, size_t max = 120) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

// UTF-8 as Python's pickle decodes it ("surrogatepass": encoded surrogates ok).
bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t extra = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (c < 0x80) extra = 0;
    else if (c >= 0xC2 && c <= 0xDF) extra = 1;
    else if (c == 0xE0) extra = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEF) extra = 2;
    else if (c == 0xF0) extra = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) extra = 3;
    else if (c == 0xF4) extra = 3, hi = 0x8F;
    else return false;
    if (n - i - 1 < extra) return false;
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char cc = p[i + k];
      if (k == 1 ? (cc < lo || cc > hi) : (cc < 0x80 || cc > 0xBF)) return false;
    }
    i += 1 + extra;
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(const std::string& data, const std::string& source) : data_(data), source_(source) {
    make(Kind::None);                                // index 0
    make(Kind::Bool);                                // index 1: False
    values_[make(Kind::Bool)].number = 1;            // index 2: True
  }

  std::vector<PickledTensor> run();

 private:
  static constexpr uint32_t kNone = 0, kFalse = 1, kTrue = 2;

  [[noreturn]] void fail(const std::string& problem) const {
    throw CheckpointError(source_ + ": data.pkl: " + problem + " (opcode at byte " + std::to_string(op_pos_) + ")");
  }

  // --- input -------------------------------------------------------------
  const unsigned char* take(uint64_t n) {
    if (n > data_.size() - pos_) {
      fail("pickle is truncated: needs " + std::to_string(n) + " more bytes at byte " + std::to_string(pos_) +
           " but only " + std::to_string(data_.size() - pos_) + " remain");
    }
    const auto* p = reinterpret_cast<const unsigned char*>(data_.data()) + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint64_t take_le(size_t n) {  // unsigned little-endian integer of n <= 8 bytes
    const unsigned char* p = take(n);
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
  }
  std::string take_text(uint64_t n) {  // length already bounded by take()
    const unsigned char* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }
  std::string take_line() {  // GLOBAL's newline-terminated module / name
    const void* nl = pos_ < data_.size() ? std::memchr(data_.data() + pos_, '\n', data_.size() - pos_) : nullptr;
    if (!nl) fail("GLOBAL name is not terminated by a newline");
    const size_t len = static_cast<const char*>(nl) - (data_.data() + pos_);
    std::string line = take_text(len);
    ++pos_;
    return line;
  }

  // --- values and the stack ---------------------------------------------
  uint32_t make(Kind kind) {
    if (values_.size() >= kPickleMaxValues) fail("pickle creates more than " + std::to_string(kPickleMaxValues) + " values");
    values_.emplace_back();
    values_.back().kind = kind;
    return uint32_t(values_.size() - 1);
  }
  Value& at(uint32_t index) { return values_[index]; }
  uint32_t make_int(int64_t v) {
    const uint32_t i = make(Kind::Int);
    at(i).number = v;
    return i;
  }
  uint32_t make_str(std::string s) {
    if (!valid_utf8(s)) fail("string is not valid UTF-8");
    const uint32_t i = make(Kind::Str);
    at(i).text = std::move(s);
    return i;
  }
  void add_items(uint32_t container, const uint32_t* first, size_t count) {
    if (count > kPickleMaxContainerItems - item_count_) fail("pickle puts too many items into containers");
    item_count_ += count;
    auto& items = at(container).items;
    items.insert(items.end(), first, first + count);
  }

  // Opcodes inside a MARK may not touch what lies below it (as in CPython).
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(uint32_t v) {
    if (stack_.size() >= kPickleMaxStack) fail("pickle stack grows beyond " + std::to_string(kPickleMaxStack) + " entries");
    stack_.push_back(v);
  }
  uint32_t top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  uint32_t pop() {
    const uint32_t v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("pickle has no MARK to pop to");
    std::vector<uint32_t> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  uint32_t expect(uint32_t v, Kind kind, const char* what) {
    if (at(v).kind != kind) fail(std::string(what) + " must be of type " + kind_name(kind) + ", not " + kind_name(at(v).kind));
    return v;
  }
  void memo_put(uint64_t index, uint32_t v) {
    if (memo_.size() >= kPickleMaxMemo && memo_.find(uint32_t(index)) == memo_.end()) {
      fail("pickle memo grows beyond " + std::to_string(kPickleMaxMemo) + " entries");
    }
    memo_[uint32_t(index)] = v;
  }
  uint32_t memo_get(uint64_t index) {
    auto it = memo_.find(uint32_t(index));
    if (it == memo_.end()) fail("pickle reads memo entry " + std::to_string(index) + " that was never stored");
    return it->second;
  }

  void make_tuple(std::vector<uint32_t> items) {
    const uint32_t t = make(Kind::Tuple);
    add_items(t, items.data(), items.size());
    push(t);
  }
  void push_global(const std::string& module, const std::string& name);
  void reduce();
  void build();
  void persistent_load();
  std::vector<int64_t> int_tuple(uint32_t v, const char* what);
  std::vector<PickledTensor> collect(uint32_t root);

  const std::string& data_;
  const std::string& source_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<Value> values_;
  std::vector<PickledTensor> tensors_;  // Kind::Tensor values point here (names filled at the end)
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
  size_t item_count_ = 0;
};

void Unpickler::push_global(const std::string& module, const std::string& name) {
  static const struct { const char* module; const char* name; Global id; } kAllowed[] = {
      {"collections", "OrderedDict", Global::OrderedDict},
      {"torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2},
      {"torch._utils", "_rebuild_parameter", Global::RebuildParameter},
      {"torch", "FloatStorage", Global::FloatStorage},
      {"torch", "HalfStorage", Global::HalfStorage},
      {"torch", "BFloat16Storage", Global::BFloat16Storage},
  };
  for (const auto& allowed : kAllowed) {
    if (module == allowed.module && name == allowed.name) {
      const uint32_t g = make(Kind::Global);
      at(g).global = allowed.id;
      push(g);
      return;
    }
  }
  const std::string full = printable(module) + "." + printable(name);
  const std::string suffix = "Storage";
  if (module == "torch" && name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    throw CheckpointError(source_ + ": checkpoint stores a tensor of unsupported dtype (" + full +
                          "); only float32, float16 and bfloat16 are supported");
  }
  throw CheckpointError(source_ + ": checkpoint references disallowed global '" + full +
                        "'; only tensors and state-dict containers are allowed");
}

std::vector<int64_t> Unpickler::int_tuple(uint32_t v, const char* what) {
  expect(v, Kind::Tuple, what);
  std::vector<int64_t> out;
  for (uint32_t item : at(v).items) out.push_back(at(expect(item, Kind::Int, what)).number);
  return out;
}

// ('storage', <storage type>, key, location, numel) -> a storage reference.
void Unpickler::persistent_load() {
  const uint32_t pid = expect(pop(), Kind::Tuple, "persistent id");
  const std::vector<uint32_t> f = at(pid).items;
  if (f.size() != 5 || at(f[0]).kind != Kind::Str || at(f[0]).text != "storage") {
    fail("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  const Value& type = at(expect(f[1], Kind::Global, "storage type"));
  StoredDtype dtype;
  switch (type.global) {
    case Global::FloatStorage: dtype = StoredDtype::Float32; break;
    case Global::HalfStorage: dtype = StoredDtype::Float16; break;
    case Global::BFloat16Storage: dtype = StoredDtype::BFloat16; break;
    default: fail("persistent id's storage type is not a storage class");
  }
  expect(f[3], Kind::Str, "storage location");
  const int64_t numel = at(expect(f[4], Kind::Int, "storage size")).number;
  if (numel < 0) fail("storage has a negative size");
  const uint32_t s = make(Kind::Storage);
  at(s).dtype = dtype;
  at(s).number = numel;
  at(s).text = at(expect(f[2], Kind::Str, "storage key")).text;
  push(s);
}

// Calls nothing: recognises the three callables torch.save uses and builds
// plain values from their arguments.
void Unpickler::reduce() {
  const uint32_t args_index = expect(pop(), Kind::Tuple, "REDUCE arguments");
  const uint32_t callable = expect(pop(), Kind::Global, "REDUCE callable");
  const std::vector<uint32_t> args = at(args_index).items;
  switch (at(callable).global) {
    case Global::OrderedDict: {
      if (!args.empty()) fail("OrderedDict must be created empty");
      const uint32_t d = make(Kind::Dict);
      at(d).ordered = true;
      push(d);
      return;
    }
    case Global::RebuildTensorV2: {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.size() != 6 && args.size() != 7) fail("_rebuild_tensor_v2 takes 6 or 7 arguments");
      const Value& storage = at(expect(args[0], Kind::Storage, "tensor storage"));
      PickledTensor t;
      t.dtype = storage.dtype;
      t.storage_key = storage.text;
      t.storage_numel = storage.number;
      t.storage_offset = at(expect(args[1], Kind::Int, "tensor storage offset")).number;
      t.shape = int_tuple(args[2], "tensor size");
      t.stride = int_tuple(args[3], "tensor stride");
      if (t.shape.size() != t.stride.size()) fail("tensor size and stride differ in length");
      expect(args[4], Kind::Bool, "requires_grad");
      expect(args[5], Kind::Dict, "backward hooks");
      if (args.size() == 7) expect(args[6], Kind::Dict, "tensor metadata");
      const uint32_t v = make(Kind::Tensor);
      at(v).number = int64_t(tensors_.size());
      tensors_.push_back(std::move(t));
      push(v);
      return;
    }
    case Global::RebuildParameter: {
      // (data, requires_grad, backward_hooks): a Parameter is just its tensor here.
      if (args.size() != 3) fail("_rebuild_parameter takes 3 arguments");
      expect(args[0], Kind::Tensor, "parameter data");
      expect(args[1], Kind::Bool, "requires_grad");
      expect(args[2], Kind::Dict, "backward hooks");
      push(args[0]);
      return;
    }
    default:
      fail("a storage type cannot be called");
  }
}

// state_dict() returns an OrderedDict carrying a `_metadata` attribute, which
// pickles as BUILD with {'_metadata': ...}. The attribute only records module
// versions, so it is accepted and dropped.
void Unpickler::build() {
  expect(pop(), Kind::Dict, "BUILD state");
  const Value& target = at(top());
  if (target.kind != Kind::Dict || !target.ordered) fail("BUILD is only supported on an OrderedDict");
}

std::vector<PickledTensor> Unpickler::collect(uint32_t root) {
  const Value& dict = at(root);
  if (dict.kind != Kind::Dict) fail(std::string("the checkpoint holds a value of type ") + kind_name(dict.kind) + ", not a state dict");
  if (dict.items.size() / 2 > kPickleMaxEntries) {
    fail("state dict has more than " + std::to_string(kPickleMaxEntries) + " entries");
  }
  std::vector<PickledTensor> out;
  out.reserve(dict.items.size() / 2);
  std::unordered_set<std::string> seen;
  for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
    const Value& key = at(dict.items[i]);
    const Value& value = at(dict.items[i + 1]);
    if (key.kind != Kind::Str) fail(std::string("state dict keys must be of type str, not ") + kind_name(key.kind));
    if (value.kind != Kind::Tensor) {
      fail("state dict entry '" + printable(key.text) + "' holds a value of type " + kind_name(value.kind) + ", not a tensor");
    }
    if (!seen.insert(key.text).second) fail("state dict has two entries named '" + printable(key.text) + "'");
    out.push_back(tensors_[size_t(value.number)]);
    out.back().name = key.text;
  }
  return out;
}

std::vector<PickledTensor> Unpickler::run() {
  while (pos_ < data_.size()) {
    op_pos_ = pos_;
    const unsigned char op = *take(1);
    switch (op) {
      case 0x80: {  // PROTO
        const unsigned version = *take(1);
        if (version < 2 || version > 5) fail("pickle protocol " + std::to_string(version) + " is not supported (2-5 are)");
        break;
      }
      case 0x95: take(8); break;  // FRAME: a buffering hint; the bytes follow inline
      case '.': {                 // STOP
        const uint32_t root = pop();
        if (!stack_.empty() || !marks_.empty()) fail("pickle stops with values left on the stack");
        return collect(root);
      }
      case '(':  // MARK
        if (marks_.size() >= kPickleMaxStack) fail("pickle opens too many MARKs");
        marks_.push_back(stack_.size());
        break;
      case '}': push(make(Kind::Dict)); break;
      case ']': push(make(Kind::List)); break;
      case ')': push(make(Kind::Tuple)); break;
      case 't': make_tuple(pop_mark()); break;
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        std::vector<uint32_t> items(size_t(op - 0x84));
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        make_tuple(std::move(items));
        break;
      }
      case 'a': {  // APPEND
        const uint32_t v = pop();
        add_items(expect(top(), Kind::List, "APPEND target"), &v, 1);
        break;
      }
      case 'e': {  // APPENDS
        const std::vector<uint32_t> items = pop_mark();
        add_items(expect(top(), Kind::List, "APPENDS target"), items.data(), items.size());
        break;
      }
      case 's': {  // SETITEM
        uint32_t kv[2];
        kv[1] = pop();
        kv[0] = pop();
        add_items(expect(top(), Kind::Dict, "SETITEM target"), kv, 2);
        break;
      }
      case 'u': {  // SETITEMS
        const std::vector<uint32_t> items = pop_mark();
        if (items.size() % 2 != 0) fail("SETITEMS has a key without a value");
        add_items(expect(top(), Kind::Dict, "SETITEMS target"), items.data(), items.size());
        break;
      }
      case 'X': push(make_str(take_text(take_le(4)))); break;     // BINUNICODE
      case 0x8c: push(make_str(take_text(take_le(1)))); break;    // SHORT_BINUNICODE
      case 0x8d: push(make_str(take_text(take_le(8)))); break;    // BINUNICODE8
      case 'T': {                                                 // BINSTRING
        const uint64_t n = take_le(4);
        if (n >= 0x80000000u) fail("BINSTRING has a negative length");
        push(make_str(take_text(n)));
        break;
      }
      case 'U': push(make_str(take_text(take_le(1)))); break;     // SHORT_BINSTRING
      case 'J': {                                                 // BININT: signed 32-bit
        const uint64_t u = take_le(4);
        push(make_int(u >= 0x80000000u ? int64_t(u) - (int64_t(1) << 32) : int64_t(u)));
        break;
      }
      case 'K': push(make_int(int64_t(take_le(1)))); break;       // BININT1
      case 'M': push(make_int(int64_t(take_le(2)))); break;       // BININT2
      case 0x8a: {  // LONG1: n-byte little-endian two's complement
        const size_t n = *take(1);
        if (n > 8) fail("integer does not fit in 64 bits");
        uint64_t u = n ? take_le(n) : 0;
        if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t(0) << (8 * n);  // sign-extend
        const int64_t v = u > uint64_t(std::numeric_limits<int64_t>::max())
                              ? -int64_t(~u) - 1
                              : int64_t(u);
        push(make_int(v));
        break;
      }
      case 'N': push(kNone); break;
      case 0x88: push(kTrue); break;
      case 0x89: push(kFalse); break;
      case 'G': {  // BINFLOAT: kept only as a bit pattern, never used
        const uint32_t f = make(Kind::Float);
        at(f).number = int64_t(take_le(8) & uint64_t(std::numeric_limits<int64_t>::max()));
        push(f);
        break;
      }
      case 'q': memo_put(take_le(1), top()); break;                // BINPUT
      case 'r': memo_put(take_le(4), top()); break;                // LONG_BINPUT
      case 0x94: memo_put(memo_.size(), top()); break;             // MEMOIZE
      case 'h': push(memo_get(take_le(1))); break;                 // BINGET
      case 'j': push(memo_get(take_le(4))); break;                 // LONG_BINGET
      case 'c': {  // GLOBAL: checked before anything else happens
        std::string module = take_line();
        std::string name = take_line();
        push_global(module, name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = expect(pop(), Kind::Str, "STACK_GLOBAL name");
        const uint32_t module = expect(pop(), Kind::Str, "STACK_GLOBAL module");
        push_global(at(module).text, at(name).text);
        break;
      }
      case 'R': reduce(); break;
      case 'b': build(); break;
      case 'Q': persistent_load(); break;  // BINPERSID
      default: {
        static const char hex[] = "0123456789abcdef";
        throw CheckpointError(source_ + ": data.pkl: unknown or unsupported pickle opcode 0x" + hex[op >> 4] +
                              hex[op & 15] + " at byte " + std::to_string(op_pos_));
      }
    }
  }
  fail("pickle ends without a STOP opcode");
}

}  // namespace

std::vector<PickledTensor> parse_state_dict_pickle(const std::string& pickle, const std::string& source) {
  return Unpickler(pickle, source).run();
}

}  // namespace qwen3
