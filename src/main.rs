fn main() {
    std::process::exit(tapnet::cli::main());
}
