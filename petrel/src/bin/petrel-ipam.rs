//! `petrel-ipam`: the CNI IPAM plugin. The main plugin runs it with the CNI
//! environment and the network configuration on stdin; it asks the node
//! agent and prints the result (see the `cni` crate).

use std::io::Read;

fn main() {
    let env = cni::plugin::Env::from_process();
    let mut stdin = Vec::new();
    // VERSION may come with nothing on stdin.
    if env.command != "VERSION" && std::io::stdin().read_to_end(&mut stdin).is_err() {
        stdin.clear();
    }
    let out = cni::plugin::run(&env, &stdin, cni::plugin::ask);
    if let Some(v) = out.stdout {
        println!("{v}");
    }
    std::process::exit(out.exit);
}
