// scalify io: model and optimizer checkpoints in safetensors files.
//
//   add_parameters(w, params, format)     the parameters' values into a writer
//   load_parameters(f, params)            ... back into the parameter tensors
//   save_checkpoint(path, params, opt, metadata)
//   load_checkpoint(path or file, params, opt)  everything a resumed run needs; returns
//                                         the metadata (e.g. the caller's step
//                                         and RNG state, see rng_state())
//
// A checkpoint file holds, for parameters named by parameters() (e.g.
// "0.w", "block1.attn.qkv.w"):
//   model.<param>, model.<param>_scale          the values: data and scale,
//       in the optimizer's storage format when that holds them exactly (it
//       does after every step: the optimizer stores the weights in it), else F32
//   optimizer.<param>.<state>, ..._scale        each state tensor as stored:
//       momentum (sgd), adam_m and adam_r = sqrt(second moment) (adamw)
//   __metadata__: scalify.checkpoint (format version), scalify.optimizer
//       (sgd | adamw), scalify.step_count, scalify.skipped_steps,
//       scalify.state_tensors (the state tensors saved: the non-empty ones),
//       scalify.state (format, scaling, rounding, seed), scalify.config (the
//       hyperparameters: restored on load, as PyTorch's load_state_dict does;
//       set config() afterwards to change them), scalify.version, and the
//       caller's own keys.
// Loading checks everything before changing anything: the optimizer kind and
// state settings, every tensor's presence (the state tensors listed; the
// others come back empty, as saved), shape and dtype, no tensors the
// model does not have; any problem throws format_error naming the file and
// the tensor, with the model and optimizer untouched. Resuming from a
// checkpoint gives bit-identical results to a run that was not interrupted
// (the stochastic rounding seeds derive from the restored step count).
#ifndef SCALIFY_IO_CHECKPOINT_HPP_
#define SCALIFY_IO_CHECKPOINT_HPP_

#include <charconv>      // std::to_chars, std::from_chars (locale-independent)
#include <cmath>         // std::isfinite
#include <exception>     // std::exception
#include <stdexcept>     // std::invalid_argument
#include <string_view>   // std::string_view
#include <system_error>  // std::errc
#include <map>      // std::map
#include <random>   // std::mt19937_64
#include <set>      // std::set
#include <sstream>  // std::ostringstream, std::istringstream
#include <string>   // std::string
#include <utility>  // std::move
#include <variant>  // std::visit
#include <vector>   // std::vector

#include <nlohmann/json.hpp>  // nlohmann::json (scalify.state_tensors)

#include "scalify/errors.hpp"           // format_error
#include "scalify/io/safetensors.hpp"   // safetensors_writer, safetensors_file
#include "scalify/nn/mlp.hpp"           // param_ref
#include "scalify/nn/optim.hpp"         // sgd, adamw, state_ref, state_config
#include "scalify/nn/tensor.hpp"        // Tensor, AnyTensor, dtype, cast_to

namespace scalify::io {

/// The version of the checkpoint layout this header writes and reads.
inline constexpr const char* kCheckpointVersion = "1";

namespace detail {

/// The file dtype of an nn::dtype.
inline tensor_dtype file_dtype(nn::dtype t) {
  switch (t) {
    case nn::dtype::float32: return tensor_dtype::F32;
    case nn::dtype::float16: return tensor_dtype::F16;
    case nn::dtype::bfloat16: return tensor_dtype::BF16;
    case nn::dtype::e4m3fn: return tensor_dtype::F8_E4M3;
    case nn::dtype::e5m2: return tensor_dtype::F8_E5M2;
  }
  throw nn::detail::bad_dtype("scalify::io", t);
}

/// x's data rounded into `t` when that holds it exactly (widened back it is
/// unchanged; NaN stays NaN), else x as it is (float32): one cast.
inline nn::AnyTensor stored_exactly(const nn::Tensor& x, nn::dtype t) {
  if (t == nn::dtype::float32) return x;
  nn::AnyTensor stored = nn::cast_to(x, t, convert_options{});
  const nn::Tensor back = std::visit([](const auto& v) { return nn::Tensor(v); }, stored);
  const auto a = x.data().array(), b = back.data().array();
  if (((a == b) || (a != a && b != b)).all()) return stored;
  return x;
}

/// Adds `x` (an AnyTensor) under `name`.
inline void add_any(safetensors_writer& w, const std::string& name, const nn::AnyTensor& x) {
  std::visit([&](const auto& v) { w.add(name, v); }, x);
}

/// Tensor `name` of `f` loaded in its own dtype, which must be `want`.
inline nn::AnyTensor load_any(const safetensors_file& f, const std::string& name, nn::dtype want) {
  const tensor_info& t = f.at(name);
  if (t.dtype != file_dtype(want)) {
    bad_file(f.path(), "tensor '" + name + "' is " + dtype_name(t.dtype) + ", but the optimizer stores " +
                           nn::dtype_name(want));
  }
  switch (want) {
    case nn::dtype::float32: return f.load<float>(name);
    case nn::dtype::float16: return f.load<float16>(name);
    case nn::dtype::bfloat16: return f.load<bfloat16>(name);
    case nn::dtype::e4m3fn: return f.load<float8_e4m3fn>(name);
    case nn::dtype::e5m2: return f.load<float8_e5m2>(name);
  }
  throw nn::detail::bad_dtype("scalify::io", want);
}

/// Throws format_error unless tensor `name` of `f` has the shape rows x cols.
inline void check_shape(const safetensors_file& f, const std::string& name, Eigen::Index rows, Eigen::Index cols) {
  const tensor_info& t = f.at(name);
  if (t.rows() != rows || t.cols() != cols) {
    bad_file(f.path(), "tensor '" + name + "' has shape " + t.shape_string() + ", the model's is " +
                           scalify::detail::shape_string(rows, cols));
  }
}

/// "fp16 scaled stochastic seed 97328631": what must match to resume.
inline std::string state_string(const nn::state_config& s) {
  return std::string(nn::dtype_name(s.format)) + (s.dynamic_scale ? " scaled" : " unscaled") +
         (s.stochastic_master ? " stochastic" : " nearest") + " seed " + std::to_string(s.seed);
}

/// The hyperparameters of a config as "name=value" pairs (floats exactly, as
/// hex floats: "0x1.99999ap-5", what printf's %a writes in the C locale).
struct config_field {
  const char* name;
  float* value;
};
inline std::vector<config_field> fields_of(nn::sgd_config& c) {
  return {{"lr", &c.lr}, {"momentum", &c.momentum}, {"weight_decay", &c.weight_decay}};
}
inline std::vector<config_field> fields_of(nn::adamw_config& c) {
  return {{"lr", &c.lr}, {"beta1", &c.beta1}, {"beta2", &c.beta2}, {"eps", &c.eps}, {"weight_decay", &c.weight_decay}};
}
/// `v` as a hex float, "0x" after the sign when finite (std::to_chars: the
/// same in every locale, where %a would write the locale's decimal point).
inline std::string hex_float(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::hex);
  std::string s(buf, r.ptr);
  if (std::isfinite(v)) s.insert(s[0] == '-' ? 1 : 0, "0x");
  return s;
}
/// A float as config_string() writes it (or in decimal: "0.5"), read with
/// std::from_chars in any locale: true and `out` set if `s` is all of one
/// and exactly a float.
inline bool parse_float(std::string_view s, float& out) {
  const bool negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  const bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  if (hex) s.remove_prefix(2);
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  double v = 0.0;
  const auto format = hex ? std::chars_format::hex : std::chars_format::general;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v, format);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return false;
  if (negative) v = -v;
  if (static_cast<double>(static_cast<float>(v)) != v) return false;  // NaN too
  out = static_cast<float>(v);
  return true;
}
template <class Config>
std::string config_string(Config c) {
  std::string out;
  for (const auto& f : fields_of(c)) {
    out += std::string(out.empty() ? "" : " ") + f.name + "=" + hex_float(static_cast<double>(*f.value));
  }
  return out + " on_nonfinite=" + (c.on_nonfinite == nn::nonfinite_policy::raise ? "raise" : "skip");
}
/// Parses config_string() text into a copy of `c`: every hyperparameter
/// and on_nonfinite exactly once, in any order; format_error naming the
/// file if it is not so.
template <class Config>
Config parse_config(const safetensors_file& f, const std::string& text, Config c) {
  const auto bad = [&](const std::string& what) { bad_file(f.path(), "metadata 'scalify.config': " + what); };
  std::istringstream in(text);
  std::string token;
  std::set<std::string> seen;
  auto fields = fields_of(c);
  while (in >> token) {
    const size_t eq = token.find('=');
    const std::string key = token.substr(0, eq), value = eq == std::string::npos ? "" : token.substr(eq + 1);
    bool known = false;
    if (key == "on_nonfinite" && (value == "skip" || value == "raise")) {
      c.on_nonfinite = value == "raise" ? nn::nonfinite_policy::raise : nn::nonfinite_policy::skip;
      known = true;
    }
    for (auto& fd : fields) {
      if (key == fd.name && parse_float(value, *fd.value)) known = true;
    }
    if (!known) bad("bad entry '" + token + "'");
    if (!seen.insert(key).second) bad("'" + key + "' appears twice");
  }
  std::string missing = seen.count("on_nonfinite") ? "" : " on_nonfinite";
  for (const auto& fd : fields) {
    if (seen.count(fd.name) == 0) missing += std::string(" ") + fd.name;
  }
  if (!missing.empty()) bad("'" + text + "': some hyperparameters are missing:" + missing);
  return c;
}

/// The names in metadata 'scalify.state_tensors' (a JSON array of distinct
/// strings: the state tensors save_checkpoint() wrote).
inline std::set<std::string> state_list(const safetensors_file& f, const std::string& text) {
  const auto bad = [&](const std::string& what) {
    bad_file(f.path(), "metadata 'scalify.state_tensors' is '" + text + "': " + what);
  };
  const nlohmann::json list = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!list.is_array()) bad("not a JSON array of names");
  std::set<std::string> out;
  for (const auto& name : list) {
    if (!name.is_string()) bad("not a JSON array of names");
    if (!out.insert(name.get<std::string>()).second) bad("'" + name.get<std::string>() + "' appears twice");
  }
  return out;
}

/// The metadata value of `key` as a count in [0, 2^62] (what an optimizer's
/// restore_counters takes).
inline long count_of(const safetensors_file& f, const std::string& key) {
  const std::string v = f.metadata(key, "");
  long out = 0;
  size_t used = 0;
  try {
    out = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (v.empty() || used != v.size() || out < 0 || out > nn::detail::optimizer_base::kMaxStepCount) {
    bad_file(f.path(), "metadata '" + key + "' is '" + v + "', not a count in [0, 2^62]");
  }
  return out;
}

}  // namespace detail

/// Adds every parameter as `prefix` + its name: the data rounded into
/// `format` (float32: as it is) and the scale. Rounding into a narrower
/// format than the values hold loses precision (e.g. an fp8 export for
/// inference: rebase first, see docs/checkpoints.md). Throws
/// std::invalid_argument for a null parameter or a name already added.
///
/// **Example**: `scalify::io::add_parameters(w, net.parameters(), scalify::nn::dtype::float16);`
inline void add_parameters(safetensors_writer& w, const std::vector<nn::param_ref>& params,
                           nn::dtype format = nn::dtype::float32, const std::string& prefix = "") {
  for (const auto& p : params) {
    SCALIFY_CHECK(p.value != nullptr, std::invalid_argument,
                  "scalify::io::add_parameters: parameter '" + p.name + "' is null");
    detail::add_any(w, prefix + p.name, nn::cast_to(*p.value, format));
  }
}

/// Loads every parameter from tensor `prefix` + its name (any float dtype,
/// widened exactly to float data; its `_scale`, else 1). All of them are
/// read and checked (present, same shape) before any parameter changes.
/// Throws format_error naming the file and the tensor.
///
/// **Example**: `scalify::io::load_parameters(scalify::io::safetensors_file::open("mlp.safetensors"), net.parameters());`
inline void load_parameters(const safetensors_file& f, const std::vector<nn::param_ref>& params,
                            const std::string& prefix = "") {
  std::vector<nn::Tensor> values;
  values.reserve(params.size());
  for (const auto& p : params) {
    SCALIFY_CHECK(p.value != nullptr, std::invalid_argument,
                  "scalify::io::load_parameters: parameter '" + p.name + "' is null");
    const std::string name = prefix + p.name;
    if (f.find(name) == nullptr) detail::bad_file(f.path(), "no tensor '" + name + "' for parameter '" + p.name + "'");
    detail::check_shape(f, name, p.value->rows(), p.value->cols());
    values.push_back(f.load_converted<float>(name));
  }
  for (size_t i = 0; i < params.size(); ++i) *params[i].value = std::move(values[i]);
}

/// Writes a checkpoint of `params` and `opt` (nn::sgd or nn::adamw) to
/// `path` (replaced atomically), with `metadata` (the caller's keys: its
/// step, data order, RNG state...). Throws std::invalid_argument, before
/// anything is written, for what the file could not hold (a parameter or
/// state tensor whose scale is not finite, e.g. after a diverged update; a
/// name or key beyond the read_limits), std::runtime_error if the file
/// cannot be written; an existing file at `path` is then unchanged.
///
/// **Example**: `scalify::io::save_checkpoint("run.safetensors", net.parameters(), opt, {{"epoch", "3"}});`
template <class Optimizer>
void save_checkpoint(const std::string& path, const std::vector<nn::param_ref>& params, Optimizer& opt,
                     const std::map<std::string, std::string>& metadata = {}) {
  safetensors_writer w;
  const nn::dtype format = opt.state().format;
  for (const auto& p : params) {
    SCALIFY_CHECK(p.value != nullptr, std::invalid_argument,
                  "scalify::io::save_checkpoint: parameter '" + p.name + "' is null");
    detail::add_any(w, "model." + p.name, detail::stored_exactly(*p.value, format));
  }
  std::vector<std::string> saved;  // the state tensors written (an empty buffer is not)
  for (const nn::state_ref& s : opt.state_tensors()) {
    if (s.buffer->empty()) continue;
    detail::add_any(w, "optimizer." + s.name, s.buffer->stored());
    saved.push_back(s.name);
  }
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.set_metadata("scalify.checkpoint", kCheckpointVersion);
  w.set_metadata("scalify.optimizer", Optimizer::kind());
  w.set_metadata("scalify.step_count", std::to_string(opt.step_count()));
  w.set_metadata("scalify.skipped_steps", std::to_string(opt.skipped_steps()));
  w.set_metadata("scalify.state_tensors", nlohmann::json(saved).dump());
  w.set_metadata("scalify.state", detail::state_string(opt.state()));
  w.set_metadata("scalify.config", detail::config_string(opt.config()));
  w.write(path);
}

/// Restores `params` and `opt` from the checkpoint `f` (see the file
/// comment) and returns the file's metadata. Everything is checked before
/// anything changes: the optimizer kind and state settings must be the
/// ones `opt` was built with, every parameter and every state tensor the
/// file's metadata 'scalify.state_tensors' lists must be there with its
/// shape and dtype (the other state tensors are restored empty, as they
/// were when saved), and the file must hold no model or optimizer tensor
/// that `params` and `opt` do not have. A file without that list (written
/// before it existed) must hold the state tensors the restored optimizer's
/// next step reads (state_ref::required with the file's counters and
/// config). Throws format_error naming the file (and the tensor) otherwise.
///
/// **Example**:
/// ```
/// auto meta = scalify::io::load_checkpoint("run.safetensors", net.parameters(), opt);
/// int first_epoch = std::stoi(meta.at("epoch")) + 1;
/// ```
template <class Optimizer>
std::map<std::string, std::string> load_checkpoint(const safetensors_file& f, const std::vector<nn::param_ref>& params,
                                                   Optimizer& opt) {
  const auto fail = [&](const std::string& what) { detail::bad_file(f.path(), what); };
  const std::string version = f.metadata("scalify.checkpoint", "");
  if (version != kCheckpointVersion) {
    fail(version.empty() ? "not a scalify checkpoint (no scalify.checkpoint metadata)"
                         : "checkpoint version " + version + ", this scalify reads " + kCheckpointVersion);
  }
  const std::string kind = f.metadata("scalify.optimizer", "");
  if (kind != Optimizer::kind()) {
    fail("the checkpoint's optimizer is '" + kind + "', not " + Optimizer::kind());
  }
  const std::string state = f.metadata("scalify.state", "");
  if (state != detail::state_string(opt.state())) {
    fail("the checkpoint's optimizer state is '" + state + "', this optimizer's is '" +
         detail::state_string(opt.state()) + "' (use the same precision and seed to resume)");
  }
  const long steps = detail::count_of(f, "scalify.step_count");
  const long skipped = detail::count_of(f, "scalify.skipped_steps");
  const auto config = detail::parse_config(f, f.metadata("scalify.config", ""), opt.config());
  try {
    Optimizer::check_config(config);
  } catch (const std::invalid_argument& e) {
    fail(std::string("metadata 'scalify.config': ") + e.what());
  }

  // The model: read and checked, not yet assigned.
  std::set<std::string> expected;
  for (const auto& p : params) {
    expected.insert("model." + p.name);
    expected.insert("model." + p.name + "_scale");
  }
  // The optimizer's state as it will be once the counters and the config are restored.
  const bool listed = f.metadata().count("scalify.state_tensors") != 0;
  std::set<std::string> saved;  // the state tensors the file says it holds
  if (listed) saved = detail::state_list(f, f.metadata("scalify.state_tensors", ""));
  const long saved_steps = opt.step_count(), saved_skipped = opt.skipped_steps();
  const auto saved_config = opt.config();
  opt.restore_counters(steps, skipped);
  opt.config() = config;
  std::vector<nn::state_ref> refs = opt.state_tensors();
  opt.config() = saved_config;
  opt.restore_counters(saved_steps, saved_skipped);
  std::vector<nn::AnyTensor> buffers(refs.size());
  std::vector<bool> present(refs.size(), false);
  for (size_t i = 0; i < refs.size(); ++i) {
    const std::string name = "optimizer." + refs[i].name;
    expected.insert(name);
    expected.insert(name + "_scale");
    const bool required = listed ? saved.erase(refs[i].name) != 0 : refs[i].required;
    if (f.find(name) == nullptr) {
      if (required) {
        fail("no tensor '" + name + "' (" +
             (listed ? std::string("metadata 'scalify.state_tensors' lists it")
                     : "the optimizer's next step, after step " + std::to_string(steps) + ", needs it") +
             ")");
      }
      continue;
    }
    if (listed && !required) fail("tensor '" + name + "' is not in metadata 'scalify.state_tensors'");
    buffers[i] = detail::load_any(f, name, opt.state().format);
    present[i] = true;
  }
  for (const auto& t : f.tensors()) {
    const bool ours = t.name.rfind("model.", 0) == 0 || t.name.rfind("optimizer.", 0) == 0;
    if (ours && expected.count(t.name) == 0) {
      fail("tensor '" + t.name + "' has no parameter or optimizer state here (a different model?)");
    }
  }
  if (!saved.empty()) {
    fail("metadata 'scalify.state_tensors' lists '" + *saved.begin() +
         "', a state tensor this optimizer does not have (a different model?)");
  }
  // Shapes of the state tensors: the parameters'.
  const auto& ps = opt.parameters();
  for (size_t i = 0; i < refs.size(); ++i) {
    if (!present[i]) continue;
    const auto& p = ps.at(refs[i].param);
    detail::check_shape(f, "optimizer." + refs[i].name, p.value->rows(), p.value->cols());
  }
  load_parameters(f, params, "model.");  // checks all, then assigns
  for (size_t i = 0; i < refs.size(); ++i) refs[i].buffer->restore(present[i] ? std::move(buffers[i]) : nn::AnyTensor{});
  opt.restore_counters(steps, skipped);
  opt.config() = config;
  return f.metadata();
}

/// load_checkpoint() of the file at `path` (opened and checked first).
template <class Optimizer>
std::map<std::string, std::string> load_checkpoint(const std::string& path, const std::vector<nn::param_ref>& params,
                                                   Optimizer& opt) {
  return load_checkpoint(safetensors_file::open(path), params, opt);
}

/// The state of a std::mt19937_64 as text (for checkpoint metadata).
inline std::string rng_state(const std::mt19937_64& g) {
  std::ostringstream out;
  out << g;
  return out.str();
}

/// Restores `g` from rng_state() text; throws format_error (naming `what`)
/// if the text is not such a state.
inline void restore_rng(std::mt19937_64& g, const std::string& text, const std::string& what = "rng state") {
  std::istringstream in(text);
  std::mt19937_64 r;
  in >> r;
  if (in.fail() || !(in >> std::ws).eof()) throw format_error("scalify::io: " + what + " is not a std::mt19937_64 state");
  g = r;
}

}  // namespace scalify::io

#endif  // SCALIFY_IO_CHECKPOINT_HPP_
