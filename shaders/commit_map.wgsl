// The commit map: a steps × positions raster (one RGBA texel per canvas position and step),
// drawn into the rectangle egui gives the paint callback, with zoom and pan as a uv window.
// Texels are fetched exactly (no filtering) so zoomed-in cells stay crisp squares, matching the
// CPU fallback, which draws the same raster as a nearest-filtered egui texture.

struct View {
    // Visible part of the raster, in [0, 1] texture coordinates.
    uv_min: vec2<f32>,
    uv_max: vec2<f32>,
    // x: 1 when the target framebuffer is sRGB, so the shader must output linear values.
    flags: vec4<u32>,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var raster: texture_2d<f32>;

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

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let dims = vec2<i32>(textureDimensions(raster));
    let texel = clamp(vec2<i32>(floor(in.uv * vec2<f32>(dims))), vec2<i32>(0, 0), dims - vec2<i32>(1, 1));
    let c = textureLoad(raster, texel, 0);
    if (view.flags.x == 1u) {
        return vec4<f32>(srgb_to_linear(c.rgb), 1.0);
    }
    return vec4<f32>(c.rgb, 1.0);
}
