# node-gyp build of the same addon that CMakeLists.txt builds (cmake-js is the default build;
# `npm run prebuild` drives this one through prebuildify). Sources come from native/sources.json
# and libtorch is found by lib/addon/libtorch.ts (built into dist/), in the same order as CMakeLists.txt, so the
# two builds cannot drift. QWEN3_TORCH_PREBUILD=1 leaves out the run path to the local libtorch.
{
  "targets": [
    {
      "target_name": "qwen3_torch",
      "sources": ["<!@(node -p \"require('./native/sources.json').sources.join(' ')\")"],
      "include_dirs": [
        "native",
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node dist/addon/libtorch.js include)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NAPI_CPP_EXCEPTIONS",
        "<!@(node dist/addon/libtorch.js defines)"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-frtti", "-Wno-unused-parameter", "-O2"],
      "libraries": [
        "-L<!(node dist/addon/libtorch.js libdir)",
        "<!@(node dist/addon/libtorch.js rpath)",
        "<!@(node dist/addon/libtorch.js libraries)"
      ],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_ENABLE_CPP_RTTI": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++20",
        "OTHER_LDFLAGS": ["<!@(node dist/addon/libtorch.js rpath)"]
      }
    },
    {
      # The libtorch-free helper that opens libtorch's libraries before a prebuilt addon loads
      # (native/platform/preload.cc). Not a .node file, so prebuildify ships it as a library beside the addon.
      "target_name": "qwen3_torch_preload",
      "sources": ["<!@(node -p \"require('./native/sources.json').preload.join(' ')\")"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [["OS=='linux'", { "libraries": ["-ldl"] }]],
      # node-gyp's addon.gypi names every loadable module .node in a target condition; a later
      # target condition names this one back.
      "target_conditions": [
        ["OS=='mac'", { "product_extension": "dylib" }, { "product_extension": "so" }],
        ["OS=='win'", { "product_extension": "dll" }]
      ]
    }
  ]
}
