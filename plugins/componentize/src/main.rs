//! `componentize <core.wasm> <out.wasm>`: wraps a core module built with
//! wit-bindgen (it carries its world in a custom section) into a component,
//! with wit-component's `ComponentEncoder`. No WASI adapter: Corral plugins
//! import nothing but their world.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: componentize <core.wasm> <out.wasm>");
        return ExitCode::from(2);
    };
    let encode = || -> Result<Vec<u8>, String> {
        let module = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
        wit_component::ComponentEncoder::default()
            .module(&module)
            .map_err(|e| format!("{input}: {e:#}"))?
            .validate(true)
            .encode()
            .map_err(|e| format!("{input}: {e:#}"))
    };
    match encode().and_then(|c| std::fs::write(output, c).map_err(|e| format!("{output}: {e}"))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("componentize: {e}");
            ExitCode::FAILURE
        }
    }
}
