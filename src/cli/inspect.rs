//! `qforget inspect MODEL [--json]`.

use std::path::Path;

use qforget::graph::summary::QInfo;

fn q(q: &QInfo) -> String {
    if q.dtype == "float32" {
        return "float32 (float)".to_string();
    }
    if !q.channel_scales.is_empty() {
        let lo = q
            .channel_scales
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        return format!(
            "{} s∈[{lo:.2e},{:.2e}] per-channel zp={}",
            q.dtype, q.scale, q.zero_point
        );
    }
    format!("{} s={:.6} zp={}", q.dtype, q.scale, q.zero_point)
}

/// Print the model's summary.
pub fn run(model: &Path, json: bool) -> anyhow::Result<()> {
    let graph = qforget::onnx::load(model)?;
    let s = graph.summary();
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("model      {}", model.display());
    let pixels = match &s.input_normalization {
        None => "pixels = byte / 255".to_string(),
        Some(n) => format!(
            "pixels = (byte / 255 − mean) / std, mean {:?} std {:?} from the metadata",
            n.mean, n.std
        ),
    };
    let fns = match (s.input_functions, s.input_element_functions) {
        (0, 0) => String::new(),
        (b, e) => format!(
            ", then the model's float functions: {b} per byte, {e} per element after its pooling"
        ),
    };
    println!(
        "input      '{}' float32 {:?} ({pixels}{fns}) → {}",
        s.input_name,
        s.input_shape,
        q(&s.input_q)
    );
    match &s.output_probs {
        None => println!("output     '{}' {} classes", s.output_name, s.classes),
        Some(p) => println!(
            "output     '{}' {} classes: Softmax of the logits, quantized {} (top-1 on these)",
            s.output_name,
            s.classes,
            q(p)
        ),
    }
    println!();
    println!(
        "{:<3} {:<15} {:<24} {:<16} {:<16} {:<34} weights",
        "#", "op", "node", "in", "out", "output quantization"
    );
    for (i, l) in s.layers.iter().enumerate() {
        let op = match l.activation {
            qforget::graph::Activation::None => l.op.to_string(),
            qforget::graph::Activation::Relu => format!("{}+relu", l.op),
            qforget::graph::Activation::Clip { .. } => format!("{}+clip", l.op),
        };
        let ins: Vec<String> = l.inputs.iter().map(|d| format!("{d:?}")).collect();
        let w = match &l.weights {
            Some(w) if w.bits == 32 => format!("{:?} float32 +{} bias", w.shape, w.bias),
            Some(w) => format!(
                "{:?} {}int{} {}{} s∈[{:.2e},{:.2e}] +{} bias{}",
                w.shape,
                if w.unsigned { "u" } else { "" },
                w.bits,
                w.granularity,
                match &w.zero_points[..] {
                    [] => String::new(),
                    [z] => format!(" zp={z}"),
                    zs => format!(
                        " zp∈[{},{}]",
                        zs.iter().min().unwrap_or(&0),
                        zs.iter().max().unwrap_or(&0)
                    ),
                },
                w.scale_min,
                w.scale_max,
                w.bias,
                if w.float_in_file {
                    " (float in the file)"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        let mut node = l.name.clone();
        if node.chars().count() > 24 {
            node = node.chars().take(23).collect::<String>() + "…";
        }
        println!(
            "{:<3} {:<15} {:<24} {:<16} {:<16} {:<34} {}",
            i,
            op,
            node,
            ins.join(" "),
            format!("{:?}", l.output),
            q(&l.output_q),
            w
        );
    }
    println!();
    let four = s
        .layers
        .iter()
        .any(|l| l.weights.as_ref().is_some_and(|w| w.bits == 4));
    let float = s
        .layers
        .iter()
        .any(|l| l.weights.as_ref().is_some_and(|w| w.bits == 32));
    println!(
        "parameters {} ({} bytes as {} weights{} + 32-bit biases)",
        s.parameters,
        s.int8_bytes,
        if four { "packed 4/8-bit" } else { "int8" },
        if float {
            " and float32 float-layer weights"
        } else {
            ""
        }
    );
    Ok(())
}
