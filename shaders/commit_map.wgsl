// The commit map: a steps × positions raster drawn into the rectangle egui gives the paint
// callback, with zoom and pan as a uv window. Each texel holds data, not a colour:
//   x = state | revisions << 24   (state 0: masked, 1: given, 2 + s: committed at step s)
//   y = probability (u16) << 16 | score (f16)
// and the colour is computed here with the same mapping as `gui/colors.rs` (`cell_color`), so a
// new step uploads one row and a colour-mode change uploads nothing. Texels are fetched exactly
// (no filtering) so zoomed-in cells stay crisp squares, matching the CPU fallback.

struct View {
    // Visible part of the raster, in [0, 1] raster coordinates.
    uv_min: vec2<f32>,
    uv_max: vec2<f32>,
    // x: columns, y: rows filled (the texture may have more), z: colour mode, w: 1 when the
    // target framebuffer is sRGB, so the shader must output linear values.
    size: vec4<u32>,
    // x: steps of the run, y: lowest score, z: highest score.
    scale: vec4<f32>,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var texels: texture_2d<u32>;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// Two triangles covering the callback's viewport.
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let c = corners[i];
    var out: VsOut;
    out.pos = vec4<f32>(c.x * 2.0 - 1.0, 1.0 - c.y * 2.0, 0.0, 1.0);
    out.uv = mix(view.uv_min, view.uv_max, c);
    return out;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + vec3<f32>(0.055)) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

fn rgb(r: f32, g: f32, b: f32) -> vec3<f32> {
    return vec3<f32>(r, g, b) / 255.0;
}

// colors::ramp: dark purple → teal → yellow.
fn ramp(t_in: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(68.0, 1.0, 84.0),
        vec3<f32>(59.0, 82.0, 139.0),
        vec3<f32>(33.0, 145.0, 140.0),
        vec3<f32>(94.0, 201.0, 98.0),
        vec3<f32>(253.0, 231.0, 37.0),
    );
    let t = clamp(t_in, 0.0, 1.0);
    let x = t * 4.0;
    let i = min(u32(floor(x)), 3u);
    let c = mix(stops[i], stops[i + 1u], x - f32(i));
    return floor(c) / 255.0;
}

// colors::confidence: red (unsure) → amber → green (sure).
fn confidence(p_in: f32) -> vec3<f32> {
    let p = clamp(p_in, 0.0, 1.0);
    var c: vec3<f32>;
    if (p < 0.5) {
        c = mix(vec3<f32>(200.0, 60.0, 60.0), vec3<f32>(220.0, 170.0, 50.0), p * 2.0);
    } else {
        c = mix(vec3<f32>(220.0, 170.0, 50.0), vec3<f32>(60.0, 170.0, 90.0), (p - 0.5) * 2.0);
    }
    return floor(c) / 255.0;
}

fn texel_color(t: vec2<u32>) -> vec3<f32> {
    let state = t.x & 0x00ffffffu;
    if (state == 0u) {
        return rgb(58.0, 60.0, 66.0); // MASKED
    }
    if (state == 1u) {
        return rgb(90.0, 90.0, 96.0); // GIVEN
    }
    let step = f32(state - 2u);
    switch view.size.z {
        case 1u: {
            return confidence(f32(t.y >> 16u) / 65535.0);
        }
        case 2u: {
            let score = unpack2x16float(t.y & 0xffffu).x;
            let lo = view.scale.y;
            let hi = view.scale.z;
            var s = 1.0;
            if (hi > lo) {
                s = (score - lo) / (hi - lo);
            }
            return ramp(s);
        }
        case 3u: {
            let rev = t.x >> 24u;
            if (rev == 0u) {
                return rgb(70.0, 110.0, 150.0);
            }
            if (rev == 1u) {
                return rgb(230.0, 140.0, 40.0);
            }
            return rgb(255.0, 90.0, 80.0);
        }
        default: {
            return ramp(step / max(view.scale.x - 1.0, 1.0));
        }
    }
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let dims = vec2<i32>(i32(view.size.x), i32(view.size.y));
    let texel = clamp(vec2<i32>(floor(in.uv * vec2<f32>(dims))), vec2<i32>(0, 0), dims - vec2<i32>(1, 1));
    let c = texel_color(textureLoad(texels, texel, 0).xy);
    if (view.size.w == 1u) {
        return vec4<f32>(srgb_to_linear(c), 1.0);
    }
    return vec4<f32>(c, 1.0);
}
