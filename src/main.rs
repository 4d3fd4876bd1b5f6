fn main() -> std::process::ExitCode {
    cspulse::cli::main()
}
