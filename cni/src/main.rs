//! `tabby-cni`: the CNI plugin the container runtime executes. A thin shim: see
//! `tabby_cni::shim`.

use std::io::Write;

fn main() {
    let outcome = tabby_cni::shim::run(
        |k| std::env::var(k).ok(),
        std::io::stdin().lock(),
        &tabby_cni::shim::default_socket(),
    );
    if let Some(out) = &outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        // Nothing sensible is left to do if stdout itself is gone; the exit code still tells.
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
    std::process::exit(outcome.exit_code);
}
