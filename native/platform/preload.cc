// qwen3_torch_preload: a tiny Node-API module with no libtorch dependency. The loader (lib/binary.ts)
// opens libtorch's shared libraries through it, by absolute path and with global visibility, before
// it loads a prebuilt addon. The addon names libc10.so, libtorch_cpu.so and libtorch.so without a
// path (a prebuild carries no run path: the build machine's libtorch folder means nothing on the
// user's), and the dynamic loader satisfies such a name with a library that is already loaded. So
// the libtorch the loader found is the one the addon uses, and no LD_LIBRARY_PATH is needed.
//
// Node's own process.dlopen cannot do this job: it closes a library that is not an addon, and
// whether glibc then really unloads it depends on the library's symbols (libc10 stays, libtorch
// goes).
#include <node_api.h>

#include <string>

#ifdef _WIN32
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace {

napi_value Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, nullptr, message.c_str());
  return nullptr;
}

// open(path): loads the shared library at `path` for the life of the process; throws with the
// system's reason when it cannot.
napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1) {
    return Throw(env, "open(path): expected a path");
  }
  size_t length = 0;
  if (napi_get_value_string_utf8(env, argv[0], nullptr, 0, &length) != napi_ok) {
    return Throw(env, "open(path): expected a string");
  }
  std::string path(length, '\0');
  napi_get_value_string_utf8(env, argv[0], path.data(), length + 1, &length);
#ifdef _WIN32
  // The folder of `path` is searched for the library's own dependencies.
  if (LoadLibraryExA(path.c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH) == nullptr) {
    return Throw(env, path + ": LoadLibrary failed with error " + std::to_string(GetLastError()));
  }
#else
  // Never closed: the addon and libtorch's own static state need it until the process ends.
  if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* why = dlerror();
    return Throw(env, why ? why : path + ": dlopen failed");
  }
#endif
  return nullptr;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "open", NAPI_AUTO_LENGTH, Open, nullptr, &fn);
  napi_set_named_property(env, exports, "open", fn);
  return exports;
}
