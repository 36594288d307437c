use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aixds::cli::Cli::parse();
    aixds::cli::init_logging(cli.log_format);
    match aixds::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
