// Typed reads of JSON object fields, for JSON that comes from files and from other processes
// (model folders, etcd). nlohmann's value() and get() throw when a field holds another type; an
// uncaught throw would take the process down. JsonField returns an error naming the field instead.
//
//   FS_ASSIGN_OR_RETURN(std::string id, JsonField<std::string>(entry, "node_id", ""));
//   FS_ASSIGN_OR_RETURN(int64_t heads, JsonField<int64_t>(config, "num_key_value_heads", 0));
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "common/status.h"

namespace foresight {

namespace internal {
inline Status JsonWrongType(const std::string& key, const nlohmann::json& v, const char* expected) {
  std::string shown = v.dump();
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  return InvalidArgument("field \"" + key + "\" is " + v.type_name() + " " + shown + ", expected " + expected);
}
}  // namespace internal

// `object[key]` as T (std::string, bool, an integer type, or a floating type). `fallback` when the
// object lacks the key or holds null there; INVALID_ARGUMENT naming the key when `object` is not an
// object, when the value has another type, or when an integer does not fit T.
template <typename T>
StatusOr<T> JsonField(const nlohmann::json& object, const std::string& key, T fallback) {
  if (!object.is_object()) return internal::JsonWrongType(key, object, "an object holding it");
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  const nlohmann::json& v = *it;
  if constexpr (std::is_same_v<T, std::string>) {
    if (v.is_string()) return v.get<std::string>();
    return internal::JsonWrongType(key, v, "a string");
  } else if constexpr (std::is_same_v<T, bool>) {
    if (v.is_boolean()) return v.get<bool>();
    return internal::JsonWrongType(key, v, "true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return internal::JsonWrongType(key, v, "an integer");
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(u);
    } else {
      const int64_t s = v.get<int64_t>();
      const bool fits = std::is_signed_v<T> ? s >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                                  s <= static_cast<int64_t>(std::numeric_limits<T>::max())
                                            : s >= 0 && static_cast<uint64_t>(s) <= std::numeric_limits<T>::max();
      if (fits) return static_cast<T>(s);
    }
    return InvalidArgument("field \"" + key + "\" = " + v.dump() + " is out of range");
  } else {
    static_assert(std::is_floating_point_v<T>, "JsonField reads strings, bools, integers and floats");
    if (v.is_number()) return v.get<T>();
    return internal::JsonWrongType(key, v, "a number");
  }
}

// As JsonField, for JSON read from a file: the error is DATA_LOSS, prefixed with `where` (the
// file's path, and the object within it).
template <typename T>
StatusOr<T> JsonFileField(const nlohmann::json& object, const std::string& key, T fallback, const std::string& where) {
  auto v = JsonField<T>(object, key, std::move(fallback));
  if (!v.ok()) return DataLoss(where + ": " + v.status().message());
  return v;
}

}  // namespace foresight
