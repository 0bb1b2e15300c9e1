//! QR codes of tracked links, as SVG (for print) and PNG (for anything
//! else), from the `qrcode` crate's module matrix.

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module in the PNG.
const PNG_SCALE: usize = 8;
/// Quiet zone, in modules, on each side (the standard asks for 4).
const QUIET: usize = 4;

fn code(text: &str) -> Result<QrCode, String> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| e.to_string())
}

/// The QR code of `text` as an SVG document.
pub fn svg(text: &str) -> Result<String, String> {
    Ok(code(text)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code of `text` as a greyscale PNG.
pub fn png(text: &str) -> Result<Vec<u8>, String> {
    let code = code(text)?;
    let n = code.width();
    let colors = code.to_colors();
    let side = (n + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i % n + QUIET, i / n + QUIET);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            pixels[y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(&pixels).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_holds_the_codes_modules() {
        let text = "https://go.example.com/r/spring-sale";
        let code = code(text).unwrap();
        let bytes = png(text).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let side = info.width as usize;
        assert_eq!(side, (code.width() + 2 * QUIET) * PNG_SCALE);
        // Every module's centre pixel has the module's colour.
        for (i, c) in code.to_colors().iter().enumerate() {
            let (mx, my) = (i % code.width() + QUIET, i / code.width() + QUIET);
            let px = buf[(my * PNG_SCALE + PNG_SCALE / 2) * side + mx * PNG_SCALE + PNG_SCALE / 2];
            assert_eq!(px == 0, *c == Color::Dark, "module {i}");
        }
        assert!(svg(text).unwrap().starts_with("<?xml"));
    }
}
