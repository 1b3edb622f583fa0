// The --devices, --distributed and --shard-optimizer options of `l2l train` and `l2l bench train`: parsing, rules, and the MPI start-up.
using System.CommandLine;
using System.Globalization;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Training.Distributed;

namespace L2L.Cli.Commands;

/// <summary>
/// The accelerators <c>--devices</c> names, in order. An entry is a device (<c>cuda:1</c>) or a kind with a count
/// (<c>cuda*2</c>: that many devices of the kind, from its first; <c>cpu*2</c>: two CPU accelerators, the one kind
/// that can be opened more than once). Entries without an index are <see cref="Relative"/>: under an MPI launcher
/// with several ranks on one machine, each rank shifts them by its local rank, so ranks do not share a device.
/// </summary>
/// <param name="Specs">One spec per accelerator this process opens.</param>
/// <param name="Relative">Whether each spec's index counts from this rank's first device (no index was typed).</param>
internal sealed record DeviceList(IReadOnlyList<DeviceSpec> Specs, IReadOnlyList<bool> Relative)
{
    /// <summary>Parses a --devices value; a bad entry is a <see cref="FormatException"/> with one sentence naming it.</summary>
    public static DeviceList Parse(string text, string option = "--devices")
    {
        var specs = new List<DeviceSpec>();
        var relative = new List<bool>();
        var entries = text.Split(',', StringSplitOptions.TrimEntries);
        foreach (var entry in entries)
        {
            if (entry.Length == 0)
                throw new FormatException($"{option} '{text}' has an empty entry. List devices separated by commas, e.g. cuda:0,cuda:1 or cpu*2.");
            var star = entry.Split('*', 2, StringSplitOptions.TrimEntries);
            var count = 1;
            if (star.Length == 2 && (!int.TryParse(star[1], NumberStyles.None, CultureInfo.InvariantCulture, out count) || count < 1 || count > 1024))
                throw new FormatException($"{option}: '{entry}' has a bad count. Put a positive integer after '*' (e.g. cpu*2).");
            DeviceSpec spec;
            try
            {
                spec = DeviceSpec.Parse(star[0]);
            }
            catch (FormatException e)
            {
                throw new FormatException($"{option}: {e.Message}", e);
            }
            if (spec.Kind == DeviceKind.Auto)
                throw new FormatException($"{option}: '{entry}' does not say which devices: 'auto' picks one. Name the kind, e.g. cuda*2 or cuda:0,cuda:1 (or use --device auto for one device).");
            var indexed = star[0].Contains(':', StringComparison.Ordinal);
            for (var i = 0; i < count; i++)
            {
                // The CPU accelerator is one device that can be opened many times; GPUs are counted up from the given index.
                var next = spec.Kind == DeviceKind.Cpu ? spec : spec with { Index = spec.Index + i };
                if (spec.Kind != DeviceKind.Cpu && specs.Contains(next))
                    throw new FormatException($"{option}: {next} is listed twice, but a GPU takes part once. List each device once (only the CPU accelerator can be repeated, e.g. cpu*2).");
                specs.Add(next);
                relative.Add(!indexed);
            }
        }
        return new DeviceList(specs, relative);
    }

    /// <summary>The single device of --device (or L2L_DEVICE, or auto), relative unless an index was typed.</summary>
    public static DeviceList Single(string? device, string option = "--device")
    {
        var spec = DeviceSpec.Resolve(device, option);
        var text = !string.IsNullOrWhiteSpace(device) && spec.Kind != DeviceKind.Auto ? device : Environment.GetEnvironmentVariable(DeviceSpec.EnvironmentVariable);
        return new DeviceList([spec], [text is null || !text.Contains(':', StringComparison.Ordinal)]);
    }

    /// <summary>Accelerators this process opens.</summary>
    public int Count => Specs.Count;

    /// <summary>
    /// The specs this rank opens: a relative GPU spec moves up by <paramref name="localRank"/> × the number of relative
    /// specs of its kind, and an automatic one becomes the kind auto picks, so ranks sharing a machine take different
    /// devices; the CPU accelerator never moves.
    /// </summary>
    public IReadOnlyList<DeviceSpec> ForLocalRank(int localRank)
    {
        if (localRank == 0) return Specs;
        var resolved = Specs.Select((s, i) => Relative[i] && s.Kind == DeviceKind.Auto ? new DeviceSpec(DeviceCatalog.AutoKind(DeviceCatalog.List()), 0) : s).ToArray();
        var perRank = resolved.Where((s, i) => Relative[i]).GroupBy(s => s.Kind).ToDictionary(g => g.Key, g => g.Count());
        return resolved.Select((s, i) => Relative[i] && s.Kind != DeviceKind.Cpu ? s with { Index = s.Index + localRank * perRank[s.Kind] } : s).ToArray();
    }

    /// <summary>For the run header, e.g. "cpu:0, cpu:0".</summary>
    public override string ToString() => string.Join(", ", Specs);
}

/// <summary>How the run is started: one process, or one rank of an MPI job (from the launcher's environment).</summary>
/// <param name="Mode">The resolved --distributed mode: none or mpi.</param>
/// <param name="Launch">What the environment says about the launcher.</param>
/// <param name="LaunchRank">This process's rank as the launcher announced it (0 when none did), known before MPI starts.</param>
/// <param name="LocalRank">Its rank among the ranks on this machine (0 when unknown).</param>
internal sealed record LaunchPlan(string Mode, MpiLaunch Launch, int LaunchRank, int LocalRank)
{
    /// <summary>Whether this process is (or will be) one rank of an MPI job.</summary>
    public bool Distributed => Mode == "mpi";

    /// <summary>The world size known before MPI starts: 1 without MPI, the launcher's when it said, else null.</summary>
    public int? WorldSizeHint => Distributed ? Launch.WorldSizeHint : 1;

    /// <summary>Whether this process writes files and stdout: rank 0 only.</summary>
    public bool Writes => LaunchRank == 0;

    /// <summary>Resolves --distributed against the environment; <paramref name="environment"/> looks a variable up (null when unset).</summary>
    public static LaunchPlan Resolve(string mode, Func<string, string?> environment)
    {
        var launch = MpiLaunch.Detect(environment);
        var resolved = mode.ToLowerInvariant() switch
        {
            "auto" => launch.IsDistributed ? "mpi" : "none",
            var m => m,
        };
        int Number(params string[] names) =>
            names.Select(environment).FirstOrDefault(v => !string.IsNullOrEmpty(v)) is { } v && int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;
        return resolved == "mpi"
            ? new LaunchPlan(resolved, launch, Number("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"), Number("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"))
            : new LaunchPlan(resolved, launch, 0, 0);
    }

    /// <summary>Starts MPI for a distributed run (each MPI call watched by L2L_MPI_TIMEOUT), or the single-process collectives.</summary>
    public IHostCollectives Start()
    {
        if (!Distributed) return new SingleProcessCollectives();
        try
        {
            return MpiCollectives.Initialize(Launch, MpiOptions.FromEnvironment());
        }
        catch (MpiException e)
        {
            throw new CliException(e.Message);
        }
    }
}

/// <summary>The three options and their rules, shared by `l2l train` and `l2l bench train`.</summary>
internal sealed class DataParallelOptions
{
    /// <summary>The --distributed values.</summary>
    public static readonly string[] Modes = ["auto", "none", "mpi"];

    /// <summary>Creates the options.</summary>
    public DataParallelOptions()
    {
        Devices = new Option<string?>("--devices") { Description = "Train data parallel on several accelerators in this process, e.g. cuda:0,cuda:1, cuda*2 or cpu*2 (two CPU accelerators); the micro-batches of each step are shared out among them." };
        Distributed = new Option<string>("--distributed") { Description = "auto (an MPI rank when started by mpirun/mpiexec, else one process), none, or mpi (insist on an MPI launcher).", DefaultValueFactory = _ => "auto" };
        ShardOptimizer = new Option<bool>("--shard-optimizer") { Description = "With several MPI ranks: each rank keeps the optimizer state of 1/R of every layer and updates that part (ZeRO-style; the full weights stay on every rank)." };
    }

    /// <summary>--devices LIST.</summary>
    public Option<string?> Devices { get; }

    /// <summary>--distributed auto|none|mpi.</summary>
    public Option<string> Distributed { get; }

    /// <summary>--shard-optimizer.</summary>
    public Option<bool> ShardOptimizer { get; }

    /// <summary>The environment the launch is read from (the process's own; tests give their own).</summary>
    public Func<string, string?> Environment { get; set; } = System.Environment.GetEnvironmentVariable;

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [Devices, Distributed, ShardOptimizer];

    /// <summary>The launch plan for this command line (after the rules passed).</summary>
    public LaunchPlan Plan(ParseResult parse) => LaunchPlan.Resolve(parse.GetValue(Distributed)!, Environment);

    /// <summary>The accelerators for this command line: --devices, else --device's one.</summary>
    public DeviceList DeviceList(ParseResult parse, Option<string?> device) =>
        parse.GetValue(Devices) is { } list ? Commands.DeviceList.Parse(list, Validation.Rules.Typed(parse, Devices)) : Commands.DeviceList.Single(parse.GetValue(device), Validation.Rules.Typed(parse, device));

    /// <summary>
    /// The rules: the list parses, --device and --devices are not both given, the mode is known and (mpi) a launcher
    /// started the process, --shard-optimizer has ranks to shard over. <paramref name="microBatches"/> gives the U the run
    /// will use (null where the command has no single U), which must split over ranks and then devices.
    /// </summary>
    public IEnumerable<Rule> Rules(Option<string?> device, Func<ParseResult, int>? microBatches, Func<ParseResult, bool>? relay)
    {
        yield return Validation.Rules.Exclusive(device, Devices, "--devices lists every device, one or more; drop --device");
        yield return Validation.Rules.Custom("--devices list", p =>
        {
            if (p.GetValue(Devices) is not { } list) return null;
            try
            {
                Commands.DeviceList.Parse(list, Validation.Rules.Typed(p, Devices));
                return null;
            }
            catch (FormatException e)
            {
                return e.Message.TrimEnd('.');
            }
        });
        yield return Validation.Rules.OneOf(Distributed, Modes, "distributed mode");
        yield return Validation.Rules.Custom("--distributed mpi needs a launcher", p =>
        {
            if (!string.Equals(p.GetValue(Distributed), "mpi", StringComparison.OrdinalIgnoreCase) || MpiLaunch.Detect(Environment).IsDistributed) return null;
            return $"{Validation.Rules.Typed(p, Distributed)} mpi, but no MPI launcher started this process (none of OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK is set). " +
                "Start it with e.g. mpirun -np 2 l2l …, or use --distributed auto";
        });
        yield return Validation.Rules.Custom("--distributed none under a launcher of several ranks", p =>
        {
            var started = MpiLaunch.Detect(Environment).WorldSizeHint;
            if (!string.Equals(p.GetValue(Distributed), "none", StringComparison.OrdinalIgnoreCase) || started is not > 1) return null;
            return $"{Validation.Rules.Typed(p, Distributed)} none, but the MPI launcher started {started} ranks: each would train alone and write the same files. " +
                "Use --distributed auto (or mpi) to train them as one job, or start a single process without the launcher";
        });
        yield return Validation.Rules.Custom("--shard-optimizer needs several MPI ranks", p =>
        {
            if (!p.GetValue(ShardOptimizer)) return null;
            var plan = Plan(p);
            if (plan.Distributed && plan.WorldSizeHint is not 1) return null;
            var why = plan.Distributed ? "the MPI launcher started 1 rank" : "this is one process (no MPI launcher started it)";
            return $"{Validation.Rules.Typed(p, ShardOptimizer)} splits the param server's optimizer state across MPI ranks, but {why}. " +
                "Start the run with mpirun -np N (N of 2 or more), or drop --shard-optimizer";
        });
        if (relay is not null)
        {
            yield return Validation.Rules.AppliesOnlyTo(ShardOptimizer, relay, "--executor relay");
            yield return Validation.Rules.Custom("--executor conventional runs on one device in one process", p =>
            {
                if (relay(p)) return null;
                var (devices, ranks) = Shape(p);
                return devices * ranks == 1 ? null
                    : $"--executor conventional runs on one device in one process, but this run has {Describe(devices, ranks)}. Use --executor relay, which trains data parallel, or one device";
            });
        }
        if (microBatches is not null)
        {
            yield return Validation.Rules.Custom("--micro-batches splits across ranks and devices", p =>
            {
                var (devices, ranks) = Shape(p);
                return SplitProblem(microBatches(p), devices, ranks);
            });
        }
    }

    /// <summary>Whether the command line spreads the run over more than one device or rank (as far as is known before MPI starts).</summary>
    public bool IsSpread(ParseResult parse)
    {
        var (devices, ranks) = Shape(parse);
        return devices * ranks > 1;
    }

    /// <summary>Why U micro-batches do not split over <paramref name="ranks"/> ranks of <paramref name="devices"/> devices each; null when they do.</summary>
    public static string? SplitProblem(int microBatches, int devices, int ranks)
    {
        if (microBatches % ranks != 0)
            return $"--micro-batches {microBatches} does not split across the {ranks} MPI ranks: every rank runs the same number of whole micro-batches. " +
                $"Use a --micro-batches that is a multiple of {ranks * devices} (and divides --batch)";
        var perRank = microBatches / ranks;
        if (perRank % devices != 0)
            return $"--micro-batches {microBatches} gives each rank {perRank} micro-batch{(perRank == 1 ? "" : "es")}, which do{(perRank == 1 ? "es" : "")} not split across its {devices} devices: every device runs the same number. " +
                $"Use a --micro-batches that is a multiple of {ranks * devices} (and divides --batch)";
        return null;
    }

    /// <summary>"2 ranks × 1 device", "1 rank × 2 devices", for messages and headers.</summary>
    public static string Describe(int devices, int ranks) =>
        $"{ranks} MPI rank{(ranks == 1 ? "" : "s")} x {devices} device{(devices == 1 ? "" : "s")}";

    // Devices per rank and ranks, as far as they are known before MPI starts (a launcher that gave no size counts as 1).
    private (int Devices, int Ranks) Shape(ParseResult p)
    {
        int devices;
        try
        {
            devices = p.GetValue(Devices) is { } list ? Commands.DeviceList.Parse(list).Count : 1;
        }
        catch (FormatException)
        {
            devices = 1; // reported by the list rule
        }
        return (devices, Plan(p).WorldSizeHint ?? 1);
    }
}
