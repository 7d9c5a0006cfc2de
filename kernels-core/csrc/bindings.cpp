// The compiled module kernels_core._C. It sees only integers (addresses, sizes, strides, a
// stream handle): the torch-facing layer lives in Python (kernels_core/ops), so this module
// does not depend on the torch ABI.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

#include "attention/block_selection_params.h"
#include "attention/block_sparse_attention.h"
#include "attention/decode_attention_params.h"
#include "common/cpu_features.h"
#include "gaussians/rasterize.h"
#include "geometry/nearest_neighbor.h"
#include "quant/fp8_attention.h"
#include "common/cuda_runtime.h"

namespace py = pybind11;

namespace {

std::vector<std::string> split_list(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, separator)) {
    if (!item.empty()) parts.push_back(item);
  }
  return parts;
}

py::dict build_info() {
  py::dict info;
  info["version"] = KC_VERSION;
  info["cxx_compiler"] = KC_CXX_COMPILER;
#if defined(KC_WITH_CUDA)
  info["with_cuda"] = true;
  info["cuda_compiler"] = KC_CUDA_COMPILER;
#else
  info["with_cuda"] = false;
  info["cuda_compiler"] = py::none();
#endif
  info["cuda_version"] = std::string(KC_BUILD_CUDA_VERSION);
  info["cuda_architectures"] = split_list(KC_BUILD_CUDA_ARCHS, ',');
  info["cpu_isas"] = split_list(KC_CPU_ISAS, ',');
  return info;
}

py::dict cuda_runtime_info() {
  const kc::cuda::RuntimeInfo rt = kc::cuda::runtime_info();
  py::dict info;
  info["compiled"] = rt.compiled;
  info["runtime_version"] = rt.runtime_version;
  info["driver_version"] = rt.driver_version;
  info["status"] = rt.status;
  py::list devices;
  for (const auto& dev : rt.devices) {
    py::dict d;
    d["index"] = dev.index;
    d["name"] = dev.name;
    d["capability"] = py::make_tuple(dev.major, dev.minor);
    d["total_memory"] = dev.total_memory;
    devices.append(d);
  }
  info["devices"] = devices;
  return info;
}

std::vector<std::string> supported_cpu_isas() {
  std::vector<std::string> names;
  for (auto isa : kc::cpu::supported_isas()) names.emplace_back(kc::cpu::isa_name(isa));
  return names;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kernels-core compiled kernels (raw-pointer interface; use the kernels_core package instead)";
  m.attr("__version__") = KC_VERSION;

  m.def("build_info", &build_info, "Compiler, CUDA version and architectures, CPU instruction sets compiled in.");
  m.def("cuda_runtime_info", &cuda_runtime_info, "CUDA runtime/driver versions and visible devices.");
  m.def("supported_cpu_isas", &supported_cpu_isas, "CPU instruction sets compiled in and usable here.");
  m.def("active_cpu_isa", [] { return std::string(kc::cpu::isa_name(kc::cpu::active_isa())); });
  m.def("set_cpu_isa", &kc::cpu::set_active_isa, py::arg("name"));

  py::enum_<kc::DType>(m, "DType")
      .value("float32", kc::DType::kFloat32)
      .value("float16", kc::DType::kFloat16)
      .value("bfloat16", kc::DType::kBFloat16);

  using Params = kc::BlockSparseAttentionParams;
  py::class_<Params>(m, "BlockSparseAttentionParams")
      .def(py::init<>())
      .def_readwrite("q", &Params::q)
      .def_readwrite("k", &Params::k)
      .def_readwrite("v", &Params::v)
      .def_readwrite("out", &Params::out)
      .def_readwrite("lse", &Params::lse)
      .def_readwrite("dtype", &Params::dtype)
      .def_readwrite("batch", &Params::batch)
      .def_readwrite("heads_q", &Params::heads_q)
      .def_readwrite("heads_kv", &Params::heads_kv)
      .def_readwrite("seqlen_q", &Params::seqlen_q)
      .def_readwrite("seqlen_k", &Params::seqlen_k)
      .def_readwrite("head_dim", &Params::head_dim)
      .def_readwrite("q_stride", &Params::q_stride)
      .def_readwrite("k_stride", &Params::k_stride)
      .def_readwrite("v_stride", &Params::v_stride)
      .def_readwrite("out_stride", &Params::out_stride)
      .def_readwrite("lse_stride", &Params::lse_stride)
      .def_readwrite("cu_seqlens_q", &Params::cu_seqlens_q)
      .def_readwrite("cu_seqlens_k", &Params::cu_seqlens_k)
      .def_readwrite("tokens_q", &Params::tokens_q)
      .def_readwrite("tokens_k", &Params::tokens_k)
      .def_readwrite("block_mask", &Params::block_mask)
      .def_readwrite("mask_stride", &Params::mask_stride)
      .def_readwrite("block_counts", &Params::block_counts)
      .def_readwrite("block_indices", &Params::block_indices)
      .def_readwrite("indices_width", &Params::indices_width)
      .def_readwrite("counts_stride", &Params::counts_stride)
      .def_readwrite("indices_stride", &Params::indices_stride)
      .def_readwrite("block_q", &Params::block_q)
      .def_readwrite("block_k", &Params::block_k)
      .def_readwrite("causal", &Params::causal)
      .def_readwrite("scale", &Params::scale);

  using BackwardParams = kc::BlockSparseAttentionBackwardParams;
  py::class_<BackwardParams, Params>(m, "BlockSparseAttentionBackwardParams")
      .def(py::init<>())
      .def_readwrite("dout", &BackwardParams::dout)
      .def_readwrite("dlse", &BackwardParams::dlse)
      .def_readwrite("dq_accum", &BackwardParams::dq_accum)
      .def_readwrite("dk", &BackwardParams::dk)
      .def_readwrite("dv", &BackwardParams::dv)
      .def_readwrite("dout_stride", &BackwardParams::dout_stride)
      .def_readwrite("dlse_stride", &BackwardParams::dlse_stride)
      .def_readwrite("dq_stride", &BackwardParams::dq_stride)
      .def_readwrite("dk_stride", &BackwardParams::dk_stride)
      .def_readwrite("dv_stride", &BackwardParams::dv_stride);

  const auto release_gil = py::call_guard<py::gil_scoped_release>();
  m.def("block_sparse_attention_forward_cpu", &kc::block_sparse_attention_forward_cpu, py::arg("params"),
        py::arg("num_threads"), release_gil);
  m.def("block_sparse_attention_forward_cuda", &kc::block_sparse_attention_forward_cuda, py::arg("params"),
        py::arg("stream"), py::arg("device"), release_gil);
  m.def("block_sparse_attention_backward_cpu", &kc::block_sparse_attention_backward_cpu, py::arg("params"),
        py::arg("num_threads"), release_gil);
  using Decode = kc::DecodeAttentionParams;
  py::class_<Decode>(m, "DecodeAttentionParams")
      .def(py::init<>())
      .def_readwrite("q", &Decode::q)
      .def_readwrite("k", &Decode::k)
      .def_readwrite("v", &Decode::v)
      .def_readwrite("out", &Decode::out)
      .def_readwrite("lse", &Decode::lse)
      .def_readwrite("dtype", &Decode::dtype)
      .def_readwrite("batch", &Decode::batch)
      .def_readwrite("heads_q", &Decode::heads_q)
      .def_readwrite("heads_kv", &Decode::heads_kv)
      .def_readwrite("seqlen_q", &Decode::seqlen_q)
      .def_readwrite("cache_len", &Decode::cache_len)
      .def_readwrite("head_dim", &Decode::head_dim)
      .def_readwrite("q_stride", &Decode::q_stride)
      .def_readwrite("k_stride", &Decode::k_stride)
      .def_readwrite("v_stride", &Decode::v_stride)
      .def_readwrite("out_stride", &Decode::out_stride)
      .def_readwrite("cache_seqlens", &Decode::cache_seqlens)
      .def_readwrite("kv_indices", &Decode::kv_indices)
      .def_readwrite("kv_counts", &Decode::kv_counts)
      .def_readwrite("num_indices", &Decode::num_indices)
      .def_readwrite("indices_stride", &Decode::indices_stride)
      .def_readwrite("counts_stride", &Decode::counts_stride)
      .def_readwrite("causal", &Decode::causal)
      .def_readwrite("scale", &Decode::scale);
  m.def("decode_attention_cpu", &kc::decode_attention_cpu, py::arg("params"), py::arg("num_threads"), release_gil);
  m.def("decode_attention_cuda", &kc::decode_attention_cuda, py::arg("params"), py::arg("stream"), py::arg("device"),
        release_gil);

  using Scores = kc::BlockScoresParams;
  py::class_<Scores>(m, "BlockScoresParams")
      .def(py::init<>())
      .def_readwrite("q", &Scores::q)
      .def_readwrite("k", &Scores::k)
      .def_readwrite("scores", &Scores::scores)
      .def_readwrite("dtype", &Scores::dtype)
      .def_readwrite("batch", &Scores::batch)
      .def_readwrite("heads_q", &Scores::heads_q)
      .def_readwrite("heads_kv", &Scores::heads_kv)
      .def_readwrite("seqlen_q", &Scores::seqlen_q)
      .def_readwrite("seqlen_k", &Scores::seqlen_k)
      .def_readwrite("head_dim", &Scores::head_dim)
      .def_readwrite("q_stride", &Scores::q_stride)
      .def_readwrite("k_stride", &Scores::k_stride)
      .def_readwrite("block_q", &Scores::block_q)
      .def_readwrite("block_k", &Scores::block_k)
      .def_readwrite("causal", &Scores::causal)
      .def_readwrite("scale", &Scores::scale);
  m.def("block_scores_cpu", &kc::block_scores_cpu, py::arg("params"), py::arg("num_threads"), release_gil);

  using Selection = kc::BlockSelectionParams;
  py::class_<Selection>(m, "BlockSelectionParams")
      .def(py::init<>())
      .def_readwrite("scores", &Selection::scores)
      .def_readwrite("rows", &Selection::rows)
      .def_readwrite("num_blocks", &Selection::num_blocks)
      .def_readwrite("counts", &Selection::counts)
      .def_readwrite("gamma", &Selection::gamma)
      .def_readwrite("min_blocks", &Selection::min_blocks)
      .def_readwrite("max_blocks", &Selection::max_blocks)
      .def_readwrite("indices", &Selection::indices)
      .def_readwrite("width", &Selection::width);
  m.def("block_recall_counts_cpu", &kc::block_recall_counts_cpu, py::arg("params"), py::arg("num_threads"),
        release_gil);
  m.def("block_top_indices_cpu", &kc::block_top_indices_cpu, py::arg("params"), py::arg("num_threads"), release_gil);

  using NN = kc::NearestNeighborParams;
  py::class_<NN>(m, "NearestNeighborParams")
      .def(py::init<>())
      .def_readwrite("x", &NN::x)
      .def_readwrite("y", &NN::y)
      .def_readwrite("dist", &NN::dist)
      .def_readwrite("index", &NN::index)
      .def_readwrite("batch", &NN::batch)
      .def_readwrite("n", &NN::n)
      .def_readwrite("m", &NN::m)
      .def_readwrite("x_stride", &NN::x_stride)
      .def_readwrite("y_stride", &NN::y_stride);
  m.def("nearest_neighbor_cpu", &kc::nearest_neighbor_cpu, py::arg("params"), py::arg("num_threads"), release_gil);
  m.def("nearest_neighbor_cuda", &kc::nearest_neighbor_cuda, py::arg("params"), py::arg("stream"), py::arg("device"),
        release_gil);

  using Raster = kc::RasterizeParams;
  py::class_<Raster>(m, "RasterizeParams")
      .def(py::init<>())
      .def_readwrite("means2d", &Raster::means2d)
      .def_readwrite("conics", &Raster::conics)
      .def_readwrite("colors", &Raster::colors)
      .def_readwrite("opacities", &Raster::opacities)
      .def_readwrite("backgrounds", &Raster::backgrounds)
      .def_readwrite("isect_offsets", &Raster::isect_offsets)
      .def_readwrite("flatten_ids", &Raster::flatten_ids)
      .def_readwrite("images", &Raster::images)
      .def_readwrite("gaussians", &Raster::gaussians)
      .def_readwrite("channels", &Raster::channels)
      .def_readwrite("n_isects", &Raster::n_isects)
      .def_readwrite("width", &Raster::width)
      .def_readwrite("height", &Raster::height)
      .def_readwrite("tile_size", &Raster::tile_size)
      .def_readwrite("tiles_x", &Raster::tiles_x)
      .def_readwrite("tiles_y", &Raster::tiles_y)
      .def_readwrite("render_colors", &Raster::render_colors)
      .def_readwrite("render_alphas", &Raster::render_alphas)
      .def_readwrite("last_ids", &Raster::last_ids)
      .def_readonly_static("max_channels", &Raster::kMaxChannels);
  using RasterBwd = kc::RasterizeBackwardParams;
  py::class_<RasterBwd>(m, "RasterizeBackwardParams")
      .def(py::init<>())
      .def_readwrite("forward", &RasterBwd::forward)
      .def_readwrite("v_render_colors", &RasterBwd::v_render_colors)
      .def_readwrite("v_render_alphas", &RasterBwd::v_render_alphas)
      .def_readwrite("v_means2d", &RasterBwd::v_means2d)
      .def_readwrite("v_conics", &RasterBwd::v_conics)
      .def_readwrite("v_colors", &RasterBwd::v_colors)
      .def_readwrite("v_opacities", &RasterBwd::v_opacities);
  m.def("rasterize_to_pixels_cpu", &kc::rasterize_to_pixels_cpu, py::arg("params"), py::arg("num_threads"),
        release_gil);
  m.def("rasterize_to_pixels_backward_cpu", &kc::rasterize_to_pixels_backward_cpu, py::arg("params"),
        py::arg("num_threads"), release_gil);

  using Fp8 = kc::Fp8AttentionParams;
  py::class_<Fp8>(m, "Fp8AttentionParams")
      .def(py::init<>())
      .def_readwrite("q", &Fp8::q)
      .def_readwrite("k", &Fp8::k)
      .def_readwrite("v", &Fp8::v)
      .def_readwrite("q_scale", &Fp8::q_scale)
      .def_readwrite("k_scale", &Fp8::k_scale)
      .def_readwrite("v_scale", &Fp8::v_scale)
      .def_readwrite("out", &Fp8::out)
      .def_readwrite("lse", &Fp8::lse)
      .def_readwrite("out_dtype", &Fp8::out_dtype)
      .def_readwrite("key_valid", &Fp8::key_valid)
      .def_readwrite("batch", &Fp8::batch)
      .def_readwrite("heads_q", &Fp8::heads_q)
      .def_readwrite("heads_kv", &Fp8::heads_kv)
      .def_readwrite("seqlen_q", &Fp8::seqlen_q)
      .def_readwrite("seqlen_k", &Fp8::seqlen_k)
      .def_readwrite("head_dim", &Fp8::head_dim)
      .def_readwrite("q_stride", &Fp8::q_stride)
      .def_readwrite("k_stride", &Fp8::k_stride)
      .def_readwrite("v_stride", &Fp8::v_stride)
      .def_readwrite("out_stride", &Fp8::out_stride)
      .def_readwrite("lse_stride", &Fp8::lse_stride)
      .def_readwrite("v_transposed", &Fp8::v_transposed)
      .def_readwrite("q_group", &Fp8::q_group)
      .def_readwrite("k_group", &Fp8::k_group)
      .def_readwrite("block_counts", &Fp8::block_counts)
      .def_readwrite("block_indices", &Fp8::block_indices)
      .def_readwrite("indices_width", &Fp8::indices_width)
      .def_readwrite("counts_stride", &Fp8::counts_stride)
      .def_readwrite("indices_stride", &Fp8::indices_stride)
      .def_readwrite("block_q", &Fp8::block_q)
      .def_readwrite("block_k", &Fp8::block_k)
      .def_readwrite("scale", &Fp8::scale);
  m.def("fp8_encode_cpu", &kc::fp8_encode_cpu, py::arg("src"), py::arg("dst"), py::arg("n"), py::arg("num_threads"),
        release_gil);
  m.def("fp8_encode_cuda", &kc::fp8_encode_cuda, py::arg("src"), py::arg("dst"), py::arg("n"), py::arg("stream"),
        py::arg("device"), release_gil);
  m.def("fp8_attention_cpu", &kc::fp8_attention_cpu, py::arg("params"), py::arg("num_threads"), release_gil);
  m.def("fp8_attention_cuda", &kc::fp8_attention_cuda, py::arg("params"), py::arg("stream"), py::arg("device"),
        release_gil);
  m.def("block_sparse_attention_backward_cuda", &kc::block_sparse_attention_backward_cuda, py::arg("params"),
        py::arg("stream"), py::arg("device"), release_gil);
}
