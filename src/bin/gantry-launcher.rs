fn main() -> std::process::ExitCode {
    gantry_launcher::main()
}
