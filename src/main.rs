//! Entry point: parse the command line, install the TLS crypto provider, run.

use std::process::ExitCode;

use attestation_broker::cli::{self, Cli, Command, TokenCommand};
use clap::Parser;

/// mimalloc instead of the system allocator: the request path allocates many
/// small, short-lived objects (JSON, headers, the STS request), where glibc's
/// malloc cost about a fifth of the CPU and fragmented memory under load
/// (measured with the load benchmark; see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => runtime.block_on(cli::serve(&config)),
        Command::CheckConfig { config } => cli::check_config(&config),
        Command::Fetch(args) => {
            runtime.block_on(attestation_broker::fetch::run(args, &cli::process_env()))
        }
        Command::Dev(args) => runtime.block_on(cli::dev::run(args)),
        Command::Token(TokenCommand::Inspect(args)) => runtime.block_on(cli::token::run(args)),
        Command::Policy { command } => cli::policy::run(&command),
        Command::RevokeGithubToken(args) => {
            runtime.block_on(cli::revoke::run(&args, &cli::process_env()))
        }
    }
}
