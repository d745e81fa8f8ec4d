"""An independent, functional SPACE-CLIP decoder written from the architecture description (shapes: test/data/).

It reads the authors' state-dict keys directly and uses only torch.nn.functional, so it shares no code with
space_clip_ros.model: tests compare the two (and the converter) against each other.
"""

import torch
import torch.nn.functional as F


def _bn(s, p, x):
    return F.batch_norm(x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"],
                        training=False, eps=1e-5)


def _conv(s, p, x, padding):
    return F.conv2d(x, s[p + ".weight"], s.get(p + ".bias"), padding=padding)


def _upsample(s, p, x):
    x = F.conv_transpose2d(x, s[p + ".upsample.weight"], s[p + ".upsample.bias"], stride=2)
    return F.relu(_bn(s, p + ".conv.1", _conv(s, p + ".conv.0", x, 1)))


def _residual(s, p, x):
    y = F.relu(_bn(s, p + ".norm1", _conv(s, p + ".conv1", x, 1)))
    y = _bn(s, p + ".norm2", _conv(s, p + ".conv2", y, 1))
    return F.relu(y + x)


def _bilinear(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def reference_decoder(s, hidden_states, pooled, semantic=(12, 9, 6, 3), structural=(2, 1, 0), use_film=True,
                      use_structural=True, has_cls=True, output_size=None, paper=False):
    """Depth (B, 1, H, W) from the authors' decoder weights ``s`` and a tower's outputs. ``paper``: their first code
    version (no skip gates; head = x2 upsample block, conv, ReLU; resized to the 16 x grid input size first)."""
    batch, _, dim = hidden_states[0].shape

    def to_map(tokens):
        tokens = tokens[:, 1:] if has_cls else tokens
        side = int(round(tokens.shape[1] ** 0.5))
        return tokens.permute(0, 2, 1).reshape(batch, dim, side, side)

    sem = []
    for i, layer in enumerate(semantic):
        tokens = hidden_states[layer]
        if use_film:
            hidden = F.relu(F.linear(pooled, s[f"film_param_generators.{i}.0.weight"],
                                     s[f"film_param_generators.{i}.0.bias"]))
            params = F.linear(hidden, s[f"film_param_generators.{i}.2.weight"], s[f"film_param_generators.{i}.2.bias"])
            gamma, beta = params[:, :dim], params[:, dim:]
            tokens = gamma[:, None, :] * tokens + beta[:, None, :]
        sem.append(_conv(s, f"main_path_projections.{i}", to_map(tokens), 0))

    struct_out = []
    if use_structural:
        x = to_map(hidden_states[structural[0]])
        for i, layer in enumerate(structural):
            p = f"structural_decoder_blocks.{i}"
            up = _upsample(s, p + ".upsample_low", x)
            skip = _bilinear(_conv(s, f"structural_path_projections.{i}", to_map(hidden_states[layer]), 0),
                             up.shape[-2:])
            x = F.relu(_bn(s, p + ".fusion_conv.1", _conv(s, p + ".fusion_conv.0", torch.cat([up, skip], 1), 1)))
            struct_out.append(x)

    x = sem[0]
    for i in range(len(semantic)):
        p = f"main_decoder_blocks.{i}"
        up = _upsample(s, p + ".upsample_low", x)
        gate = 0.0 if paper else torch.sigmoid(_conv(s, p + ".skip_clip_gate.0", up, 0))
        parts = [up, _bilinear(sem[i], up.shape[-2:]) * (1 + gate)]
        if i < len(struct_out):
            gate = 0.0 if paper else torch.sigmoid(_conv(s, p + ".skip_struct_gate.0", up, 0))
            parts.append(_bilinear(struct_out[i], up.shape[-2:]) * (1 + gate))
        x = F.relu(_bn(s, p + ".fusion_conv.1", _conv(s, p + ".fusion_conv.0", torch.cat(parts, 1), 1)))
        x = _residual(s, p + ".fusion_conv.3", x)

    if paper:
        y = _upsample(s, "depth_prediction_head.0", x)
        depth = _bilinear(F.relu(_conv(s, "depth_prediction_head.1", y, 1)), x.shape[-2:])
    else:
        y = F.relu(_bn(s, "depth_prediction_head.1", _conv(s, "depth_prediction_head.0", x, 1)))
        depth = F.relu(_conv(s, "depth_prediction_head.3", y, 1))
    if output_size is not None:
        depth = _bilinear(depth, output_size)
    return depth
