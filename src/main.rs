use clap::Parser;
use unmask::cli::{self, Cli, Command};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Cli::parse();
    let result = match args.command.unwrap_or(Command::Gui(cli::GuiArgs { model: "embedded".into(), ..Default::default() })) {
        #[cfg(feature = "gui")]
        Command::Gui(a) => unmask::gui::run(a),
        #[cfg(not(feature = "gui"))]
        Command::Gui(_) => Err(anyhow::anyhow!("this binary was built without the window (feature `gui`); use a subcommand, see --help")),
        Command::Generate(a) => cli::generate::run(&a),
        Command::Forward(a) => cli::forward::run(&a),
        Command::Inspect(a) => cli::inspect(&a),
        Command::Eval(a) => cli::eval::run(&a),
        Command::Replay(a) => cli::replay(&a),
        Command::Models(a) => cli::models::run(&a),
        Command::Download(a) => cli::download::run(&a),
        Command::Bench(a) => cli::bench::run(&a),
        Command::MakeRandomCheckpoint(a) => cli::random_checkpoint::run(&a),
        Command::Train(a) => cli::train::run(&a),
        Command::SelfTrain(a) => cli::self_train::run(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
