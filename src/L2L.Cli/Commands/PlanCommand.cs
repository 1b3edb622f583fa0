// `l2l plan`: the exact device, host and bus bytes of a configuration, or a search for the fastest one that fits a budget.
using System.CommandLine;
using System.Text.Json;
using ILGPU.Runtime.Cuda;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Training;
using L2L.Training.Optim;
using L2L.Training.Planning;
using L2L.Training.Stash;

namespace L2L.Cli.Commands;

internal static class PlanCommand
{
    /// <summary>The device as the planner sees it, read without creating an accelerator (except CUDA's free-memory query).</summary>
    internal sealed record PlanDevice(DeviceShape Shape, string Description, long MemoryBytes);

    public static Command Create(CliEnvironment env)
    {
        var model = new Option<string>("--model") { Description = $"Model preset: {string.Join(", ", ModelConfigs.PresetNames)}.", DefaultValueFactory = _ => "gpt2-tiny" };
        var config = new Option<string?>("--config") { Description = "A Hugging Face config.json, GPT-2 or BERT by its model_type (overrides --model)." };
        var batch = new Option<int>("--batch") { Description = "Sequences per step (B).", DefaultValueFactory = _ => 8 };
        var micro = new Option<int>("--micro-batches") { Description = "Micro-batches per step (U), as l2l train (typing it fixes the configuration).", DefaultValueFactory = _ => 2 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var executor = new Option<string>("--executor") { Description = "relay or conventional (typing it fixes the configuration).", DefaultValueFactory = _ => "relay" };
        var stash = new Option<string>("--stash") { Description = "Relay stash placement: device or host (typing it fixes the configuration).", DefaultValueFactory = _ => "device" };
        var (stashCodec, stashGroup) = StashCodecOptions.Create();
        var embeddingUpdate = new Option<string>("--embedding-update") { Description = "Relay: device, host, or auto (device for sgd/adamw, host for lamb).", DefaultValueFactory = _ => "auto" };
        var optimizer = new Option<string>("--optimizer") { Description = "sgd, adamw or lamb (lamb: relay only).", DefaultValueFactory = _ => "adamw" };
        var optimizerState = new Option<string>("--optimizer-state") { Description = "Relay: the param server's AdamW state in fp32 or bf16.", DefaultValueFactory = _ => "fp32" };
        var updateMode = new Option<string>("--update-mode") { Description = "Relay host updates: eager (a gradient ring) or deferred (a gradient buffer per host-updated layer).", DefaultValueFactory = _ => "eager" };
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var deviceMemory = new Option<string?>("--device-memory") { Description = "Device memory to plan for, e.g. 16GiB or 512MiB (default: the device's free memory)." };
        var hostMemory = new Option<string?>("--host-memory") { Description = "Host memory to plan for, e.g. 64GiB (default: no limit)." };
        var calibrate = new Option<bool>("--calibrate") { Description = "Time GEMMs, attention, element-wise kernels, copies and the host optimizer on the device and cache the result." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object." };
        var precision = PrecisionOption.Create();
        var top = new Option<int>("--top") { Description = "Rows of the search table to print (0: all).", DefaultValueFactory = _ => 20 };
        var command = new Command("plan", "Exact device, host and bus bytes of a training configuration, or the fastest configuration that fits a memory budget.");
        foreach (var o in new Option[] { model, config, batch, micro, seq, executor, stash, stashCodec, stashGroup, embeddingUpdate, optimizer, optimizerState, updateMode, device, deviceMemory, hostMemory, calibrate, json, top, precision })
            command.Options.Add(o);
        bool Relay(ParseResult p) => string.Equals(p.GetValue(executor), "relay", StringComparison.OrdinalIgnoreCase);
        var rules = new RuleTable
        {
            Rules.OneOf(model, ModelConfigs.PresetNames, "model preset"),
            Rules.Exclusive(model, config, "--config describes the model itself; drop --model"),
            Rules.InputFile(config, "give the path of a Hugging Face config.json (GPT-2 or BERT)"),
            Rules.AtLeast(batch, 1),
            Rules.AtLeast(micro, 1),
            Rules.Custom("--micro-batches divides --batch", p => p.GetValue(batch) % p.GetValue(micro) == 0 ? null
                : $"--batch {p.GetValue(batch)} is not divisible by --micro-batches {p.GetValue(micro)}, but every micro-batch must hold the same number of sequences. Choose a --micro-batches that divides --batch"),
            Rules.AtLeast(seq, 1),
            Rules.OneOf(executor, Enum.GetNames<ExecutorKind>().Select(n => n.ToLowerInvariant()), "executor"),
            Rules.OneOf(stash, Enum.GetNames<StashPlacement>().Select(n => n.ToLowerInvariant()), "stash placement"),
            Rules.AppliesOnlyTo(stash, Relay, "--executor relay"),
            StashCodecOptions.CodecRule(stashCodec),
            Rules.AppliesOnlyTo(stashCodec, Relay, "--executor relay"),
            StashCodecOptions.GroupRule(stashGroup),
            Rules.OneOf(embeddingUpdate, ["auto", "device", "host"], "embedding update location"),
            Rules.AppliesOnlyTo(embeddingUpdate, Relay, "--executor relay"),
            Rules.OneOf(optimizer, Enum.GetNames<OptimizerKind>().Select(n => n.ToLowerInvariant()), "optimizer"),
            Rules.Custom("--optimizer lamb needs --executor relay", p => Relay(p) || !string.Equals(p.GetValue(optimizer), "lamb", StringComparison.OrdinalIgnoreCase) ? null
                : $"{Rules.Typed(p, optimizer)} lamb runs on the host and needs --executor relay. Use --executor relay, or --optimizer adamw or sgd"),
            Rules.Custom("--embedding-update device needs sgd or adamw", p => !string.Equals(p.GetValue(embeddingUpdate), "device", StringComparison.OrdinalIgnoreCase)
                || !string.Equals(p.GetValue(optimizer), "lamb", StringComparison.OrdinalIgnoreCase) ? null
                : "--embedding-update device needs an optimizer with a device kernel, and lamb runs on the host only. Use --embedding-update host, or --optimizer adamw or sgd"),
            Rules.OneOf(optimizerState, ["fp32", "bf16"], "optimizer-state precision"),
            Rules.Custom("--optimizer-state bf16 needs adamw", p => !string.Equals(p.GetValue(optimizerState), "bf16", StringComparison.OrdinalIgnoreCase)
                || string.Equals(p.GetValue(optimizer), "adamw", StringComparison.OrdinalIgnoreCase) ? null
                : "--optimizer-state bf16 stores AdamW's moments and needs --optimizer adamw. Use --optimizer adamw, or --optimizer-state fp32"),
            Rules.OneOf(updateMode, ["eager", "deferred"], "update mode"),
            Rules.Device(device),
            SizeRule(deviceMemory),
            SizeRule(hostMemory),
            Rules.AtLeast(top, 0),
            PrecisionOption.Rule(precision),
        };
        command.SetAction(parse =>
        {
            rules.Check(parse);
            var cfg = parse.GetValue(config) is { } path ? ModelConfigs.Load(path) : ModelConfigs.Preset(parse.GetValue(model)!);
            cfg.Validate();
            if (parse.GetValue(seq) > cfg.MaxPositions)
                throw new CliException($"--seq {parse.GetValue(seq)} is longer than the model's {cfg.MaxPositions} positions. Use a --seq of at most {cfg.MaxPositions}");
            var spec = DeviceSpec.Resolve(parse.GetValue(device));
            if (parse.GetValue(calibrate))
            {
                // With --json the calibration's lines go to stderr, so stdout stays one JSON object.
                var log = parse.GetValue(json) ? env.Error : env.Out;
                using var lease = env.OpenBackend(spec);
                log.WriteLine($"calibrating {lease.Backend.Description} ...");
                // The model's own products at every micro-batch size the batch allows are timed too.
                var tokens = Enumerable.Range(1, parse.GetValue(batch)).Where(m => parse.GetValue(batch) % m == 0).Select(m => (long)m * parse.GetValue(seq));
                var sizes = Enumerable.Range(1, parse.GetValue(batch)).Where(m => parse.GetValue(batch) % m == 0).Select(m => (m, parse.GetValue(seq))).ToArray();
                var measured = DeviceCalibration.Calibrate(lease.Backend, line => log.WriteLine($"  {line}"),
                    tokens.SelectMany(t => StepTimeModel.Products(cfg, t)), DeviceCalibration.Load(lease.Backend.Description), (cfg, sizes));
                log.WriteLine($"wrote {measured.Save()}");
            }
            var target = Probe(spec);
            var optimizerKind = TrainCommand.ParseOptimizer(parse.GetValue(optimizer)!);
            var embedding = parse.GetValue(embeddingUpdate) is "auto" ? (L2L.Training.Update.UpdateLocation?)null
                : Enums.Parse<L2L.Training.Update.UpdateLocation>(parse.GetValue(embeddingUpdate)!, "--embedding-update");
            var fixedConfiguration = new Option[] { executor, stash, stashCodec, micro }.Any(o => Rules.Given(parse, o));
            var space = new PlanSpace(cfg, parse.GetValue(batch), parse.GetValue(seq), optimizerKind, embedding,
                Enums.Parse<L2L.Training.Update.UpdateMode>(parse.GetValue(updateMode)!, "--update-mode"),
                Enums.Parse<StatePrecision>(parse.GetValue(optimizerState)!, "--optimizer-state"), parse.GetValue(stashGroup), target.Shape,
                Precision: PrecisionOption.Parse(parse.GetValue(precision)!));
            if (fixedConfiguration)
                space = space with
                {
                    Executors = [Enums.Parse<ExecutorKind>(parse.GetValue(executor)!, "--executor")],
                    Stashes = [Enums.Parse<StashPlacement>(parse.GetValue(stash)!, "--stash")],
                    Codecs = [Enums.Parse<StashCodec>(parse.GetValue(stashCodec)!, "--stash-codec")],
                    MicroBatches = [parse.GetValue(micro)],
                };
            var budget = parse.GetValue(deviceMemory) is { } d ? PlanSearch.ParseBytes(d) : target.MemoryBytes;
            var hostBudget = parse.GetValue(hostMemory) is { } h ? PlanSearch.ParseBytes(h) : (long?)null;
            var speeds = Speeds(target);
            var result = PlanSearch.Search(space, budget, hostBudget, new StepTimeModel(speeds));
            if (fixedConfiguration)
            {
                var only = result.Candidates[0];
                if (parse.GetValue(json))
                {
                    var obj = only.Plan.ToJsonObject();
                    obj["predicted_step_s"] = only.Time.Step;
                    obj["fits"] = only.Fits;
                    obj["device_memory"] = budget;
                    obj["calibrated"] = speeds.Measured;
                    env.Out.WriteLine(JsonSerializer.Serialize(obj, new JsonSerializerOptions { WriteIndented = true }));
                }
                else
                {
                    WriteFixed(env.Out, only, cfg, target, budget, speeds);
                }
                return 0;
            }
            if (parse.GetValue(json))
                env.Out.WriteLine(SearchJson(result, speeds));
            else
                WriteSearch(env.Out, result, cfg, target, speeds, parse.GetValue(top));
            if (result.Pick is null)
                throw new CliException(NothingFits(result, "--device-memory"));
            return 0;
        });
        return command;
    }

    private static Rule SizeRule(Option<string?> option) =>
        Rules.Custom($"{option.Name} size", p =>
        {
            if (p.GetValue(option) is not { } text) return null;
            try { PlanSearch.ParseBytes(text); return null; }
            catch (FormatException e) { return $"{Rules.Typed(p, option)} {e.Message}"; }
        });

    /// <summary>The device's shape, description and memory (free memory on CUDA), without allocating anything on it.</summary>
    internal static PlanDevice Probe(DeviceSpec spec)
    {
        using var context = DeviceCatalog.CreateContext();
        var (device, kind) = DeviceCatalog.Select(context, spec);
        var memory = device.MemorySize;
        if (kind == DeviceKind.Cuda)
        {
            try
            {
                using var accelerator = device.CreateAccelerator(context);
                memory = ((CudaAccelerator)accelerator).GetFreeMemory();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Keep the total: the free figure is a refinement.
            }
        }
        return new PlanDevice(DeviceShape.Of(device), $"{kind.ToString().ToLowerInvariant()}: {device.Name} ({MemoryTracker.Format(device.MemorySize)})", memory);
    }

    /// <summary>The device's cached calibration, else the documented defaults.</summary>
    internal static DeviceCalibration Speeds(PlanDevice device) =>
        DeviceCalibration.Load(device.Description) ?? DeviceCalibration.Defaults(device.Description, device.Shape.IsCpu);

    private static string SpeedsLine(DeviceCalibration speeds) => speeds.Measured
        ? $"step times from this device's calibration ({DeviceCalibration.CachePath(speeds.Device)})"
        : "step times from uncalibrated defaults (see README); run `l2l plan --calibrate` once on this device for measured speeds";

    private static string Budget(long bytes) => MemoryTracker.Format(bytes);

    private static void WriteFixed(TextWriter o, PlanCandidate c, IModelConfig cfg, PlanDevice device, long budget, DeviceCalibration speeds)
    {
        var p = c.Plan;
        o.WriteLine($"l2l plan: {cfg.ModelType}, {cfg.Layers} layers, {cfg.Channels} channels | {c.Name}, seq {p.Settings.SeqLen} | device: {device.Description}");
        o.WriteLine($"device peak {p.DevicePeakBytes:N0} bytes ({MemoryTracker.Format(p.DevicePeakBytes)}): " +
            string.Join(", ", p.DevicePeakBytesByCategory.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value:N0}")));
        o.WriteLine($"host {p.HostBytes:N0} bytes ({MemoryTracker.Format(p.HostBytes)}, pinned buffers and the param server's optimizer state)");
        o.WriteLine($"bus per step {p.Bus.Total:N0} bytes: " + string.Join(", ", p.Bus.ByKind().Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value:N0}")));
        o.WriteLine($"predicted step {c.Time.Step:G4} s ({c.TokensPerSecond:G3} tokens/s); {SpeedsLine(speeds)}");
        o.WriteLine(c.FitsDevice ? $"fits {Budget(budget)} of device memory" : $"does not fit {Budget(budget)} of device memory");
    }

    private static void WriteSearch(TextWriter o, PlanSearchResult r, IModelConfig cfg, PlanDevice device, DeviceCalibration speeds, int top)
    {
        var s = r.Candidates[0].Plan.Settings;
        o.WriteLine($"l2l plan: {cfg.ModelType}, {cfg.Layers} layers, {cfg.Channels} channels, {cfg.ParameterCount:N0} parameters | batch {s.Batch}, seq {s.SeqLen} | " +
            $"device: {device.Description} | device memory {Budget(r.DeviceBudget)}" + (r.HostBudget is { } h ? $" | host memory {Budget(h)}" : ""));
        o.WriteLine($"searched {r.Candidates.Count} configurations in {r.Seconds * 1e3:F0} ms; the {cfg.Layers} identical blocks were costed once per " +
            $"micro-batch shape ({r.BlocksCosted} block costings, TAP's folding of the repeated block); {SpeedsLine(speeds)}");
        o.WriteLine($"{"fits",-5} {"configuration",-36} {"device",12} {"host",12} {"bus/step",12} {"step (s)",10} {"tokens/s",10}");
        var rows = top > 0 ? r.Candidates.Take(top) : r.Candidates;
        foreach (var c in rows)
            o.WriteLine($"{(c.Fits ? "yes" : "no"),-5} {c.Name,-36} {MemoryTracker.Format(c.Plan.DevicePeakBytes),12} {MemoryTracker.Format(c.Plan.HostBytes),12} " +
                $"{MemoryTracker.Format(c.Plan.Bus.Total),12} {c.Time.Step,10:G4} {c.TokensPerSecond,10:G3}");
        if (top > 0 && r.Candidates.Count > top)
            o.WriteLine($"({r.Candidates.Count - top} more; --top 0 prints all)");
        if (r.Pick is { } pick)
            o.WriteLine($"pick: {pick.Name} — {Why(r)}");
    }

    private static string Why(PlanSearchResult r) =>
        $"the fastest predicted ({r.Pick!.Time.Step:G4} s/step) of {r.Candidates.Count(c => c.Fits)} configurations that fit {Budget(r.DeviceBudget)}" +
        $" ({MemoryTracker.Format(r.Pick.Plan.DevicePeakBytes)} device, {MemoryTracker.Format(r.Pick.Plan.HostBytes)} host)";

    private static string NothingFits(PlanSearchResult r, string option)
    {
        var small = r.Smallest;
        var host = r.HostBudget is { } h && small.Plan.HostBytes > h ? $" and {MemoryTracker.Format(small.Plan.HostBytes)} of host memory (--host-memory {MemoryTracker.Format(h)})" : "";
        return $"No configuration fits {option} {MemoryTracker.Format(r.DeviceBudget)}: the smallest, {small.Name}, needs {small.Plan.DevicePeakBytes:N0} bytes " +
            $"({MemoryTracker.Format(small.Plan.DevicePeakBytes)}) of device memory{host}. Give a budget of at least that, a smaller --batch or --seq, or a smaller model";
    }

    private static string SearchJson(PlanSearchResult r, DeviceCalibration speeds)
    {
        Dictionary<string, object> Row(PlanCandidate c)
        {
            var obj = c.Plan.ToJsonObject();
            obj["predicted_step_s"] = c.Time.Step;
            obj["predicted_tokens_per_s"] = c.TokensPerSecond;
            obj["fits"] = c.Fits;
            return obj;
        }
        var result = new Dictionary<string, object?>
        {
            ["device_memory"] = r.DeviceBudget,
            ["host_memory"] = r.HostBudget,
            ["calibrated"] = speeds.Measured,
            ["search_seconds"] = r.Seconds,
            ["block_costings"] = r.BlocksCosted,
            ["candidates"] = r.Candidates.Select(Row).ToArray(),
            ["pick"] = r.Pick is { } p ? Row(p) : null,
        };
        return JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// <c>l2l train --plan auto</c>: searches micro-batch count, executor, stash placement and codec for <paramref name="options"/>'
    /// model, batch and sequence within <paramref name="budget"/> (default: the device's free memory) and returns the
    /// options with the pick and the header line saying what was chosen and why. Nothing fitting is a <see cref="CliException"/>,
    /// raised before any device memory is allocated.
    /// </summary>
    internal static (TrainOptions Options, string Header) Auto(TrainOptions options, DeviceSpec spec, long? budget)
    {
        var device = Probe(spec);
        var speeds = Speeds(device);
        var space = new PlanSpace(options.Config, options.Batch, options.SeqLen, options.Optimizer.Kind, options.EmbeddingUpdate,
            options.ResolvedUpdateMode, options.OptimizerState, options.StashGroup, device.Shape, Precision: options.Precision);
        var result = PlanSearch.Search(space, budget ?? device.MemoryBytes, null, new StepTimeModel(speeds));
        if (result.Pick is not { } pick)
            throw new CliException(NothingFits(result, budget is null ? "the device's memory" : "--device-budget"));
        var s = pick.Plan.Settings;
        var chosen = options with { MicroBatches = s.MicroBatches, Executor = s.Executor, Stash = s.Stash, StashCodec = s.Codec.Codec };
        var header = $"plan: {pick.Name} — {Why(result)}; {(speeds.Measured ? "calibrated speeds" : "uncalibrated default speeds")}";
        return (chosen, header);
    }
}
