fn main() -> std::process::ExitCode {
    gantry_cli::main()
}
