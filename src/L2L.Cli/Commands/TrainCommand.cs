// `l2l train`: trains a GPT-2 or BERT model with the relay or conventional executor.
using System.CommandLine;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Tokenizers;
using L2L.Training;
using L2L.Training.Distributed;
using L2L.Training.Optim;
using Spectre.Console;

namespace L2L.Cli.Commands;

internal static class TrainCommand
{
    public static Command Create(CliEnvironment env)
    {
        var model = new Option<string>("--model") { Description = $"Model preset: {string.Join(", ", ModelConfigs.PresetNames)}.", DefaultValueFactory = _ => "gpt2-tiny" };
        var config = new Option<string?>("--config") { Description = "A Hugging Face config.json, GPT-2 or BERT by its model_type (overrides --model)." };
        var init = new Option<string?>("--init") { Description = "Start from the weights in this checkpoint directory (optimizer starts fresh)." };
        var data = new Option<string?>("--data") { Description = "Token file: llm.c .bin (uint16 tokens) or any other file read as bytes. Default: the built-in synthetic corpus." };
        var labels = new Option<string?>("--labels") { Description = "BERT: llm.c .bin of targets aligned with --data (65535 = not scored). Default: mask 15% of tokens on the fly, keyed by --seed." };
        var steps = new Option<long>("--steps") { Description = "Optimizer steps to reach (a resumed run continues up to this count).", DefaultValueFactory = _ => 200 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step (B).", DefaultValueFactory = _ => 8 };
        var micro = new Option<int>("--micro-batches") { Description = "Micro-batches per step (U); must divide --batch.", DefaultValueFactory = _ => 2 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var optimizer = new Option<string>("--optimizer") { Description = "sgd, adamw or lamb (lamb: relay only).", DefaultValueFactory = _ => "adamw" };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 3e-3f };
        var wd = new Option<float>("--weight-decay") { Description = "Decoupled weight decay for 2-D weights and embeddings (not biases or LayerNorm).", DefaultValueFactory = _ => 0.0f };
        var beta1 = new Option<float>("--beta1") { Description = "Adam beta1.", DefaultValueFactory = _ => 0.9f };
        var beta2 = new Option<float>("--beta2") { Description = "Adam beta2.", DefaultValueFactory = _ => 0.999f };
        var eps = new Option<float>("--eps") { Description = "Adam epsilon (added after the square root).", DefaultValueFactory = _ => 1e-8f };
        var warmup = new Option<int>("--warmup") { Description = "Linear warmup steps.", DefaultValueFactory = _ => 0 };
        var schedule = new Option<string>("--schedule") { Description = "constant or cosine (cosine decays to 10% of --lr at --steps).", DefaultValueFactory = _ => "constant" };
        var executor = new Option<string>("--executor") { Description = "relay (L2L) or conventional (all on the device).", DefaultValueFactory = _ => "relay" };
        var stash = new Option<string>("--stash") { Description = "Relay stash placement: device, or host (constant device memory).", DefaultValueFactory = _ => "device" };
        var (stashCodec, stashGroup) = StashCodecOptions.Create();
        var (stashBudget, stashEvery) = StashCodecOptions.CreateAdaptive();
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var seed = new Option<int>("--seed") { Description = "Seed for initialisation and shuffling.", DefaultValueFactory = _ => 1337 };
        var shuffle = new Option<bool>("--shuffle") { Description = "Take windows in a seeded random order." };
        var save = new Option<string?>("--save") { Description = "Checkpoint directory written at the end (and every --save-every steps)." };
        var saveEvery = new Option<int>("--save-every") { Description = "Also save every N steps (0: only at the end).", DefaultValueFactory = _ => 0 };
        var resume = new Option<string?>("--resume") { Description = "Continue from this checkpoint directory (weights, optimizer state, step)." };
        var log = new Option<string?>("--log") { Description = "Write one JSON object per step to this file." };
        var plot = new Option<string?>("--plot") { Description = "Write a PNG plot of the loss curve to this file." };
        var threads = new Option<int?>("--optimizer-threads") { Description = "Host threads for the optimizer (default: all cores)." };
        var embeddingUpdate = new Option<string>("--embedding-update") { Description = "Relay: where the embedding and head are updated: device (no step-boundary wait), host, or auto (device for sgd/adamw, host for lamb).", DefaultValueFactory = _ => "auto" };
        var budget = new Option<long?>("--device-budget") { Description = "Cap on device bytes the engine may allocate (simulates a smaller device)." };
        var valData = new Option<string?>("--val-data") { Description = "Validation token file (llm.c .bin or bytes); its mean loss is reported as val_loss." };
        var valEvery = new Option<int>("--val-every") { Description = "Validate every N steps (and after the last).", DefaultValueFactory = _ => 50 };
        var valBatches = new Option<int>("--val-batches") { Description = "Validation batches of B sequences (the windows of unshuffled steps 0..K-1).", DefaultValueFactory = _ => 4 };
        var updateMode = new Option<string?>("--update-mode") { Description = "Relay host updates: eager (as gradients arrive) or deferred (after backward, in forward order; default with global clipping or loss scaling)." };
        var clipNorm = new Option<float?>("--clip-grad-norm") { Description = "Clip gradients to this L2 norm (PyTorch clip_grad_norm_; global norm: selects deferred updates)." };
        var clipMode = new Option<string>("--clip-mode") { Description = "global (one norm over the whole model) or layer (each layer by its own norm; keeps eager updates).", DefaultValueFactory = _ => "global" };
        var dropout = new Option<float?>("--dropout") { Description = "Dropout P on the embedding and each residual branch (embd_pdrop, resid_pdrop; attention-probability dropout is not implemented). Default: the config's." };
        var layerDrop = new Option<float>("--layer-drop") { Description = "Stochastic depth: skip each block with this probability per step (seeded; not fetched, stashed or updated).", DefaultValueFactory = _ => 0f };
        var freeze = new Option<string?>("--freeze") { Description = "Layers never updated, e.g. embedding,0-5 (also head and block numbers); backward stops below the lowest trainable layer." };
        var optimizerState = new Option<string>("--optimizer-state") { Description = "Relay: the param server's AdamW m and v in fp32, or bf16 (stochastic rounding, 4 fewer host bytes per parameter, not exact).", DefaultValueFactory = _ => "fp32" };
        var lossScale = new Option<string>("--loss-scale") { Description = "none, a static scale N (the loss gradient times N, the gradients divided by N on the host; an overflowed layer is skipped and reported), or dynamic (GradScaler semantics; deferred updates).", DefaultValueFactory = _ => "none" };
        var precision = PrecisionOption.Create();
        var planOption = new Option<string?>("--plan") { Description = "auto: pick the micro-batch count, executor, stash placement and codec that `l2l plan` predicts fastest within --device-budget (default: the device's free memory)." };

        // Unit scaling changes the model (its config records "unit_scaling"); the flag asks for it on a fresh GPT-2.
        var unitScaling = new Option<bool>("--unit-scaling") { Description = "Train a unit-scaled GPT-2 (\"unit_scaling\": true: N(0,1) weights, fixed per-op scales, per-tensor learning rates; see README 'Unit scaling'). A checkpoint keeps its own." };

        var dataFormat = DataSources.FormatOption();
        var parallel = new DataParallelOptions { Environment = env.Variables };
        var overrides = new Option<string[]>("--override") { Description = "On --resume, allow this recorded setting to change (e.g. --override lr); repeat for each.", DefaultValueFactory = _ => [] };

        var command = new Command("train", "Train a GPT-2 or BERT model with L2L relay execution (or the conventional baseline).");
        foreach (var o in new Option[] { model, config, init, data, dataFormat, labels, steps, batch, micro, seq, optimizer, lr, wd, beta1, beta2, eps, warmup, schedule, executor, stash, device, seed, shuffle, save, saveEvery, resume, overrides, log, plot, threads, embeddingUpdate, budget, valData, valEvery, valBatches, updateMode, clipNorm, clipMode, lossScale, dropout, layerDrop, freeze, optimizerState })
            command.Options.Add(o);
        command.Options.Add(stashCodec);
        command.Options.Add(stashGroup);
        command.Options.Add(unitScaling);
        command.Options.Add(precision);
        foreach (var o in parallel.All)
            command.Options.Add(o);
        command.Options.Add(planOption);
        command.Options.Add(stashBudget);
        command.Options.Add(stashEvery);

        // What a checkpoint records (RunSettings) and which option sets it: inherited on --resume, changed only with --override.
        (string, Option)[] recorded =
        [
            (RunSettings.Batch, batch), (RunSettings.Seq, seq), (RunSettings.MicroBatches, micro), (RunSettings.Optimizer, optimizer),
            (RunSettings.LearningRate, lr), (RunSettings.WeightDecay, wd), (RunSettings.Beta1, beta1), (RunSettings.Beta2, beta2),
            (RunSettings.Epsilon, eps), (RunSettings.Schedule, schedule), (RunSettings.Warmup, warmup), (RunSettings.Steps, steps),
            (RunSettings.Shuffle, shuffle), (RunSettings.Seed, seed), (RunSettings.Executor, executor), (RunSettings.Stash, stash),
            (RunSettings.UpdateMode, updateMode), (RunSettings.ClipGradNorm, clipNorm), (RunSettings.ClipMode, clipMode),
            (RunSettings.LossScale, lossScale), (RunSettings.Dropout, dropout), (RunSettings.LayerDrop, layerDrop),
            (RunSettings.Freeze, freeze), (RunSettings.OptimizerState, optimizerState), (RunSettings.StashCodec, stashCodec),
            (RunSettings.StashGroup, stashGroup), (RunSettings.EmbeddingUpdate, embeddingUpdate),
            (RunSettings.UnitScaling, unitScaling),
            (RunSettings.StashBitsBudget, stashBudget), (RunSettings.StashAdaptEvery, stashEvery),
            (RunSettings.Precision, precision),
        ];
        // Combination rules look at the value the run will use: on --resume an option not typed takes the checkpoint's.
        IReadOnlyDictionary<string, string>? inherited = null;
        string Effective(ParseResult p, Option<string> o, string key) =>
            !Rules.Given(p, o) && inherited is not null && inherited.TryGetValue(key, out var v) ? v : p.GetValue(o)!;
        bool Relay(ParseResult p) => string.Equals(Effective(p, executor, RunSettings.Executor), "relay", StringComparison.OrdinalIgnoreCase);
        bool Adam(ParseResult p) => !string.Equals(Effective(p, optimizer, RunSettings.Optimizer), "sgd", StringComparison.OrdinalIgnoreCase);
        var rules = new RuleTable
        {
            Rules.OneOf(model, ModelConfigs.PresetNames, "model preset"),
            Rules.Exclusive(model, config, "--config describes the model itself; drop --model"),
            Rules.Exclusive(init, resume, "Use --init to start from a checkpoint's weights with a fresh optimizer, or --resume to continue its run"),
            Rules.InputFile(config, "give the path of a config.json with Hugging Face GPT-2 keys (a checkpoint directory goes to --init or --resume)"),
            Rules.CheckpointInput(init, CheckpointExpected),
            Rules.CheckpointInput(resume, CheckpointExpected),
            Rules.InputFile(data, DataSources.Expected),
            Rules.OneOf(dataFormat, DataSources.FormatNames, "data format"),
            Rules.AtLeast(steps, 1L),
            Rules.AtLeast(batch, 1),
            Rules.AtLeast(micro, 1),
            Rules.Custom("--micro-batches divides --batch", p => Rules.Given(p, planOption) || p.GetValue(batch) % p.GetValue(micro) == 0 ? null
                : $"--batch {p.GetValue(batch)} is not divisible by --micro-batches {p.GetValue(micro)}, but every micro-batch must hold the same number of sequences. Choose a --micro-batches that divides --batch"),
            Rules.AtLeast(seq, 1),
            Rules.OneOf(optimizer, Enum.GetNames<OptimizerKind>().Select(n => n.ToLowerInvariant()), "optimizer"),
            Rules.Positive(lr),
            Rules.NonNegative(wd),
            Rules.HalfOpen(beta1, 0, 1),
            Rules.HalfOpen(beta2, 0, 1),
            Rules.NonNegative(eps),
            Rules.AppliesOnlyTo(beta1, Adam, "--optimizer adamw or lamb"),
            Rules.AppliesOnlyTo(beta2, Adam, "--optimizer adamw or lamb"),
            Rules.AppliesOnlyTo(eps, Adam, "--optimizer adamw or lamb"),
            Rules.AtLeast(warmup, 0),
            Rules.OneOf(schedule, Enum.GetNames<ScheduleKind>().Select(n => n.ToLowerInvariant()), "schedule"),
            Rules.OneOf(executor, Enum.GetNames<ExecutorKind>().Select(n => n.ToLowerInvariant()), "executor"),
            Rules.OneOf(stash, Enum.GetNames<StashPlacement>().Select(n => n.ToLowerInvariant()), "stash placement"),
            Rules.AppliesOnlyTo(stash, Relay, "--executor relay"),
            StashCodecOptions.CodecRule(stashCodec),
            Rules.AppliesOnlyTo(stashCodec, Relay, "--executor relay"),
            StashCodecOptions.GroupRule(stashGroup),
            StashCodecOptions.AdaptiveRules(stashBudget, stashEvery, p => Rules.Given(p, resume) && inherited is null ? null : Effective(p, stashCodec, RunSettings.StashCodec)),
            Rules.AppliesOnlyTo(threads, Relay, "--executor relay"),
            Rules.Custom("--optimizer lamb needs --executor relay", p => Relay(p) || !string.Equals(Effective(p, optimizer, RunSettings.Optimizer), "lamb", StringComparison.OrdinalIgnoreCase) ? null
                : $"{Rules.Typed(p, optimizer)} lamb runs on the host and needs --executor relay. Use --executor relay, or --optimizer adamw or sgd"),
            Rules.AtLeast(threads, 1),
            Rules.Positive(budget),
            Rules.AtLeast(saveEvery, 0),
            Rules.Requires(saveEvery, save, "it says how often to write that checkpoint"),
            Rules.Requires(overrides, resume, "it allows a setting recorded in the resumed checkpoint to change"),
            ResumeSettings.OverrideNames(overrides, recorded),
            Rules.Device(device),
            Rules.CheckpointOutput(save),
            Rules.OutputFile(log, "the metrics (one JSON object per step)"),
            Rules.OutputFile(plot, "the loss plot", ".png"),
            Rules.OneOf(embeddingUpdate, ["auto", "device", "host"], "embedding update location"),
            Rules.AppliesOnlyTo(embeddingUpdate, Relay, "--executor relay"),
            Rules.Custom("--embedding-update device needs sgd or adamw", p => !string.Equals(p.GetValue(embeddingUpdate), "device", StringComparison.OrdinalIgnoreCase)
                || !string.Equals(Effective(p, optimizer, RunSettings.Optimizer), "lamb", StringComparison.OrdinalIgnoreCase) ? null
                : "--embedding-update device needs an optimizer with a device kernel, and lamb runs on the host only. Use --embedding-update host, or --optimizer adamw or sgd"),
            Rules.Custom("--update-mode is eager or deferred", p => p.GetValue(updateMode) is null or "eager" or "deferred" ? null
                : $"--update-mode {p.GetValue(updateMode)} is not a known update mode. Use one of: eager, deferred"),
            Rules.AppliesOnlyTo(updateMode, Relay, "--executor relay"),
            Rules.OneOf(clipMode, ["global", "layer"], "clip mode"),
            // On --resume a clip norm the checkpoint recorded counts as given (known on the second pass, once the checkpoint is read).
            Rules.Custom("--clip-mode requires --clip-grad-norm", p =>
                Rules.Given(p, resume) && (inherited is null || (inherited.TryGetValue(RunSettings.ClipGradNorm, out var n) && n != RunSettings.None)) ? null
                    : Rules.Requires(clipMode, clipNorm, "it says how --clip-grad-norm applies").Check(p)),
            Rules.Positive(clipNorm),
            LossScaleOption.Rule(lossScale),
            PrecisionOption.Rule(precision),
            Rules.OneOf(optimizerState, ["fp32", "bf16"], "optimizer state precision"),
            Rules.AppliesOnlyTo(optimizerState, Relay, "--executor relay"),
            Rules.HalfOpen(layerDrop, 0, 1),
            Rules.InputFile(valData, DataSources.Expected),
            Rules.InputFile(labels, "give an llm.c .bin file of BERT targets aligned with --data (65535 where a position is not scored)"),
            Rules.AtLeast(valEvery, 1),
            Rules.AtLeast(valBatches, 1),
            Rules.Requires(valEvery, valData, "it says how often to validate on that file"),
            Rules.Requires(valBatches, valData, "it says how many batches of that file to validate on"),
            Rules.Custom("--unit-scaling needs a GPT-2 model", p => !p.GetValue(unitScaling) || !Rules.Given(p, model)
                || GptConfig.PresetNames.Contains(p.GetValue(model)!, StringComparer.OrdinalIgnoreCase) ? null
                : $"--unit-scaling builds a unit-scaled GPT-2, but --model {p.GetValue(model)} is not a GPT-2 preset. Drop --unit-scaling, or choose one of: {string.Join(", ", GptConfig.PresetNames)}"),
            Rules.Custom("--plan is auto", p => p.GetValue(planOption) is null or "auto" ? null
                : $"--plan {p.GetValue(planOption)} is not a known plan. Use --plan auto (`l2l plan` prints the table it chooses from)"),
            Rules.Exclusive(planOption, micro, "--plan auto chooses the micro-batch count; drop --micro-batches"),
            Rules.Exclusive(planOption, executor, "--plan auto chooses the executor; drop --executor"),
            Rules.Exclusive(planOption, stash, "--plan auto chooses the stash placement; drop --stash"),
            Rules.Exclusive(planOption, stashCodec, "--plan auto chooses the stash codec; drop --stash-codec"),
            Rules.Exclusive(planOption, resume, "a resumed run keeps its recorded settings; drop --plan"),
            Rules.Custom("--plan auto plans one device", p => p.GetValue(planOption) is null || !parallel.IsSpread(p) ? null
                : "--plan auto plans a run on one device in one process. Drop --plan, or drop --devices and the MPI launcher"),
        };
        // Data parallel: the device list, the launcher, sharding, and a U that splits over ranks and devices (on --resume, the recorded U).
        int MicroBatchCount(ParseResult p) => !Rules.Given(p, micro) && inherited is not null && inherited.TryGetValue(RunSettings.MicroBatches, out var u)
            && int.TryParse(u, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : p.GetValue(micro);
        foreach (var rule in parallel.Rules(device, MicroBatchCount, Relay))
            rules.Add(rule);
        rules.Add(Rules.Custom("--embedding-update device needs one device in one process", p =>
            !string.Equals(p.GetValue(embeddingUpdate), "device", StringComparison.OrdinalIgnoreCase) || (p.GetValue(parallel.Devices) is null && parallel.Plan(p).WorldSizeHint is 1) ? null
                : "--embedding-update device keeps the embedding and head on one device, but with several devices or MPI ranks every layer is updated on the host. Use --embedding-update host or auto"));
        // Data parallel: dynamic loss scaling is not implemented, and the sharded optimizer cannot hold a whole step's
        // reduced gradients, which deferred updates (global clipping's default) need.
        rules.Add(Rules.Custom("data parallel refuses dynamic loss scaling, and deferred updates when sharded", p =>
        {
            if (!parallel.IsSpread(p)) return null;
            if (string.Equals(Effective(p, lossScale, RunSettings.LossScale), "dynamic", StringComparison.OrdinalIgnoreCase))
                return Rules.Given(p, lossScale)
                    ? "--loss-scale dynamic is not implemented for data parallel training (several devices or MPI ranks). Use --loss-scale none, or train on one device"
                    : "--resume's checkpoint uses dynamic loss scaling, which is not implemented for data parallel training (several devices or MPI ranks). Resume it on one device";
            if (!p.GetValue(parallel.ShardOptimizer)) return null;
            var globalClip = (Rules.Given(p, clipNorm) || (inherited is not null && inherited.TryGetValue(RunSettings.ClipGradNorm, out var n) && n != RunSettings.None))
                && string.Equals(Effective(p, clipMode, RunSettings.ClipMode), "global", StringComparison.OrdinalIgnoreCase);
            var what = string.Equals(p.GetValue(updateMode), "deferred", StringComparison.OrdinalIgnoreCase) ? "--update-mode deferred" : globalClip ? "--clip-grad-norm (global)" : null;
            return what is null ? null
                : $"{what} keeps every layer's reduced gradients until the end of backward, which --shard-optimizer does not. Drop --shard-optimizer, or use --clip-mode layer";
        }));
        rules.Add(Rules.Custom("--shard-optimizer keeps fp32 adamw or sgd state", p =>
        {
            if (!p.GetValue(parallel.ShardOptimizer)) return null;
            if (string.Equals(p.GetValue(optimizerState), "bf16", StringComparison.OrdinalIgnoreCase))
                return "--shard-optimizer keeps each rank's share of the optimizer state in FP32. Use --optimizer-state fp32 with it";
            return string.Equals(Effective(p, optimizer, RunSettings.Optimizer), "lamb", StringComparison.OrdinalIgnoreCase)
                ? "--shard-optimizer splits every tensor across the ranks, but lamb's trust ratio needs each whole tensor. Use --optimizer adamw or sgd with it" : null;
        }));

        command.SetAction(parse =>
        {
            // Under MPI only rank 0 touches files and stdout; the others only read (the checkpoint, the data).
            var plan = parallel.Plan(parse);
            if (plan.Writes)
                foreach (var dir in new[] { parse.GetValue(resume), parse.GetValue(init), parse.GetValue(save) })
                    Checkpoints.Tidy(dir, env);
            rules.Check(parse);
            if (!plan.Writes)
                env.Silence();
            var devices = parallel.DeviceList(parse, device);

            var initDir = parse.GetValue(init);
            var resumeDir = parse.GetValue(resume);
            var explicitConfig = parse.GetValue(config) is { } path ? ModelConfigs.Load(path)
                : Rules.Given(parse, model) ? ModelConfigs.Preset(parse.GetValue(model)!) : null;
            IModelConfig cfg;
            float[][]? weights = null;
            TrainingState? state = null;
            var checkpointDir = resumeDir ?? initDir;
            if (checkpointDir is not null)
            {
                (cfg, weights) = Checkpoint.Load(checkpointDir, explicitConfig);
                if (resumeDir is not null)
                {
                    if (!Checkpoint.HasTrainingState(resumeDir))
                        throw new CliException($"--resume '{resumeDir}' has no {Checkpoint.StateFile}, so there is no optimizer state to continue. Use --init to start from its weights with a fresh optimizer");
                    state = Checkpoint.LoadTrainingState(resumeDir, new ModelLayout(cfg));
                }
            }
            else
            {
                cfg = explicitConfig ?? ModelConfigs.Preset(parse.GetValue(model)!);
            }
            cfg = UnitScalingModel(parse, unitScaling, cfg, checkpointDir, state?.Metadata);

            if (state is not null)
            {
                inherited = state.Metadata;
                rules.Check(parse); // again, now that untyped settings come from the checkpoint
            }
            var settings = new ResumeSettings(parse, state?.Metadata, recorded, parse.GetValue(overrides) ?? []);
            static float Number(string text) => float.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
            static int Integer(string text) => int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
            var clipping = (Norm: settings.Value(clipNorm, t => t == RunSettings.None ? (float?)null : Number(t)),
                Mode: Enums.Parse<L2L.Training.Update.ClipMode>(settings.Value(clipMode, t => t), "--clip-mode"));
            var (scaling, staticScale) = LossScaleOption.Parse(settings.Value(lossScale, t => t));
            // An inherited eager mode gives way to the deferred default when clipping or loss scaling now needs it.
            static L2L.Training.Update.UpdateMode? UpdateModeFor(string? text, (float? Norm, L2L.Training.Update.ClipMode Mode) clip, L2L.Training.Update.LossScaleMode scale)
            {
                var mode = text is null ? (L2L.Training.Update.UpdateMode?)null : Enums.Parse<L2L.Training.Update.UpdateMode>(text, "--update-mode");
                var needsDeferred = (clip.Norm is not null && clip.Mode == L2L.Training.Update.ClipMode.Global) || scale == L2L.Training.Update.LossScaleMode.Dynamic;
                return mode == L2L.Training.Update.UpdateMode.Eager && needsDeferred ? null : mode;
            }
            var options = new TrainOptions
            {
                Config = cfg,
                Devices = devices.Count,
                WorldSize = plan.WorldSizeHint ?? 1,
                ShardOptimizer = parse.GetValue(parallel.ShardOptimizer),
                Steps = settings.Value(steps, t => long.Parse(t, System.Globalization.CultureInfo.InvariantCulture)),
                Batch = settings.Value(batch, Integer),
                MicroBatches = settings.Value(micro, Integer),
                SeqLen = settings.Value(seq, Integer),
                Optimizer = new OptimizerSettings(ParseOptimizer(settings.Value(optimizer, t => t)), settings.Value(lr, Number),
                    settings.Value(beta1, Number), settings.Value(beta2, Number), settings.Value(eps, Number), settings.Value(wd, Number)),
                Schedule = Enums.Parse<ScheduleKind>(settings.Value(schedule, t => t), "--schedule"),
                Warmup = settings.Value(warmup, Integer),
                Executor = Enums.Parse<ExecutorKind>(settings.Value(executor, t => t), "--executor"),
                Stash = Enums.Parse<StashPlacement>(settings.Value(stash, t => t), "--stash"),
                StashCodec = Enums.Parse<L2L.Training.Stash.StashCodec>(settings.Value(stashCodec, t => t), "--stash-codec"),
                StashGroup = settings.Value(stashGroup, Integer),
                StashBitsBudget = settings.Value(stashBudget, Number),
                StashAdaptEvery = settings.Value(stashEvery, Integer),
                Seed = settings.Value(seed, Integer),
                Shuffle = settings.Value(shuffle, bool.Parse),
                OptimizerThreads = parse.GetValue(threads),
                DeviceBudgetBytes = parse.GetValue(budget),
                // An inherited device update gives way to auto when the optimizer (changed with --override) has no device kernel, or the run is data parallel.
                EmbeddingUpdate = settings.Value(embeddingUpdate, t => t == "device" && (devices.Count > 1 || plan.WorldSizeHint != 1 || !L2L.Training.Update.DeviceLayerOptimizer.Supports(ParseOptimizer(settings.Value(optimizer, o => o)))) ? "auto" : t) is { } where && where != "auto" ? Enums.Parse<L2L.Training.Update.UpdateLocation>(where, "--embedding-update") : null,
                // The sharded optimizer updates eagerly: an untyped (inherited) deferred mode gives way, a typed one was refused by the rules.
                UpdateMode = parse.GetValue(parallel.ShardOptimizer) && !Rules.Given(parse, updateMode) ? null : UpdateModeFor(settings.Value(updateMode, t => t), clipping, scaling),
                ClipGradNorm = clipping.Norm,
                Dropout = settings.Value(dropout, t => t == RunSettings.ConfigDropout ? null : Number(t)),
                LayerDrop = settings.Value(layerDrop, Number),
                OptimizerState = Enums.Parse<StatePrecision>(settings.Value(optimizerState, t => t), "--optimizer-state"),
                Freeze = settings.Value(freeze, t => t == RunSettings.None ? null : t),
                ClipMode = clipping.Mode,
                LossScale = scaling,
                StaticLossScale = staticScale,
                Precision = PrecisionOption.Parse(settings.Value(precision, t => t)),
            };
            options.Validate();
            if (state is not null)
            {
                // The step target matters only to a decaying schedule; the stash settings, update mode, optimizer-state
                // precision and embedding update only to the relay; the clip mode only with a clip norm; the codec's group
                // only with a codec. An untyped update mode follows from clipping and loss scaling, which are checked themselves.
                string[] relayOnly = [RunSettings.Stash, RunSettings.UpdateMode, RunSettings.OptimizerState, RunSettings.StashCodec, RunSettings.StashGroup, RunSettings.EmbeddingUpdate,
                    RunSettings.StashBitsBudget, RunSettings.StashAdaptEvery];
                var notes = settings.Check(RunSettings.Describe(options), resumeDir!, key =>
                    (key == RunSettings.Steps && options.Schedule == ScheduleKind.Constant) ||
                    (relayOnly.Contains(key) && options.Executor == ExecutorKind.Conventional) ||
                    (key == RunSettings.ClipMode && options.ClipGradNorm is null) ||
                    (key == RunSettings.StashGroup && options.StashCodec == L2L.Training.Stash.StashCodec.None) ||
                    (key is RunSettings.StashBitsBudget or RunSettings.StashAdaptEvery && options.StashCodec != L2L.Training.Stash.StashCodec.Adaptive) ||
                    (key == RunSettings.UpdateMode && !Rules.Given(parse, updateMode)),
                    new Dictionary<string, string> { [RunSettings.EmbeddingUpdate] = "this moves the embedding and head update between device and host, which changes results only by rounding" });
                var stateFloats = options.Optimizer.Kind == OptimizerKind.Sgd ? 0 : 2;
                if (state.StateFloatsPerParam != stateFloats)
                    throw new CliException($"--resume '{resumeDir}' holds {state.Optimizer} optimizer state, which --optimizer {options.Optimizer.Kind.ToString().ToLowerInvariant()} cannot continue. " +
                        "Resume with the checkpoint's optimizer, or use --init to start from its weights with a fresh optimizer");
                foreach (var note in notes)
                    env.Out.WriteLine($"note: {note}.");
                if (SpreadNote(state.Metadata, options) is { } spread)
                    env.Out.WriteLine($"note: {spread}.");
                if (state.Step >= options.Steps)
                {
                    env.Out.WriteLine($"checkpoint '{resumeDir}' is already at step {state.Step}, at or past --steps {options.Steps}: nothing to train, nothing saved. " +
                        "Pass a larger --steps to continue it.");
                    return 0;
                }
            }
            string? planHeader = null;
            if (parse.GetValue(planOption) is not null)
            {
                // The search needs only the device's limits: nothing is allocated before a configuration is known to fit.
                (options, planHeader) = PlanCommand.Auto(options, DeviceSpec.Resolve(parse.GetValue(device)), options.DeviceBudgetBytes);
                options.Validate();
            }
            var source = DataSources.Open(parse.GetValue(data), cfg.VocabSize, parse.GetValue(dataFormat)!, options.SeqLen);
            using var sourceLifetime = source as IDisposable;
            var labelSource = parse.GetValue(labels) is { } labelsPath ? MlmBatchLoader.OpenLabels(labelsPath) : null;
            using var labelLifetime = labelSource as IDisposable;

            // From here every rank of an MPI job takes part in every step: a failure on one rank ends them all
            // (MPI_Abort through the launcher) rather than leaving the others waiting in a collective.
            using var collectives = plan.Start();
            try
            {
                return Train(collectives);
            }
            catch (Exception e) when (collectives.WorldSize > 1)
            {
                using var line = new StringWriter();
                var code = Cli.Report(e, line, verbose: false);
                if (parse.GetValue<bool>("--verbose")) env.Error.WriteLine(e.ToString());
                collectives.Abort(code, $"error: rank {collectives.Rank} of {collectives.WorldSize}: {line.ToString().Trim()["error: ".Length..]} " +
                    "Ending every rank; the last checkpoint saved before this is intact.");
                return code;
            }

            int Train(IHostCollectives collectives)
            {
                if (collectives.WorldSize != options.WorldSize)
                {
                    // A launcher that did not announce its size (PMIx alone): the split is checked now that MPI knows it.
                    if (DataParallelOptions.SplitProblem(options.MicroBatches, options.Devices, collectives.WorldSize) is { } problem)
                        throw new CliException(problem);
                    options = options with { WorldSize = collectives.WorldSize };
                    options.Validate();
                }
                using var leases = env.OpenBackends(devices.ForLocalRank(plan.LocalRank));
                var backend = leases.Backends[0];
                env.Ansi.MarkupLine($"[bold]l2l train[/] {Markup.Escape(Describe(options, source, leases.Backends))}");
                if (planHeader is not null)
                    env.Out.WriteLine(planHeader);
                if (options.StashCodecSettings is { Enabled: true } codec)
                    env.Out.WriteLine(StashCodecOptions.Describe(codec, options, state?.Metadata));
                var setup = options.IsParallel ? new L2L.Training.Parallel.ParallelSetup(leases.Backends, collectives, options.ShardOptimizer) : null;
                using var trainer = new Trainer(backend, options, source, weights, state, labelSource, setup);
                if (trainer.HostBytesPerParameter is { } hostBytes)
                    env.Out.WriteLine($"param server{(options.ShardOptimizer ? $" (sharded: each rank's 1/{options.WorldSize})" : "")}: {hostBytes:F2} host bytes per parameter (FP32 weights, optimizer state, " +
                        (options.ResolvedUpdateMode == L2L.Training.Update.UpdateMode.Deferred ? "a gradient buffer per host-updated layer)" : "a ring of gradient buffers)"));
                var valSource = parse.GetValue(valData) is { } valPath ? DataSources.Open(valPath, cfg.VocabSize, parse.GetValue(dataFormat)!, options.SeqLen) : null;
                using var valOwner = valSource as IDisposable;
                if (valSource is not null)
                    trainer.EnableValidation(valSource, parse.GetValue(valEvery), parse.GetValue(valBatches));
                trainer.TokenizerDirectory = TokenizerSource(parse.GetValue(data), checkpointDir);
                var saveDir = parse.GetValue(save);
                var every = parse.GetValue(saveEvery);
                var metrics = new List<StepMetrics>();
                // Under mpirun stdout is a terminal on every rank; only rank 0 writes to it (the others are silenced), and never a bar on a dumb one.
                var interactive = ReferenceEquals(env.Out, Console.Out) && env.Ansi.Profile.Capabilities.Interactive && !Console.IsOutputRedirected
                    && !string.Equals(env.Variables("TERM"), "dumb", StringComparison.Ordinal);
                void Note(string line) => env.Out.WriteLine($"note: {line}.");
                void OnStep(StepMetrics m)
                {
                    metrics.Add(m);
                    if (saveDir is not null && every > 0 && m.Step % every == 0 && m.Step < options.Steps)
                        trainer.Save(saveDir, Note);
                    if (!interactive && (m.Step % 10 == 0 || m.Step == options.Steps || metrics.Count == 1 || m.ValLoss is not null))
                        env.Out.WriteLine(Line(m));
                }
                var start = trainer.StepsDone;
                var stopped = false;
                try
                {
                    if (interactive)
                    {
                        env.Ansi.Progress()
                            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                            .Start(ctx =>
                            {
                                var task = ctx.AddTask("starting", maxValue: options.Steps - start);
                                trainer.Run(m => { OnStep(m); task.Description = Markup.Escape(Line(m)); task.Increment(1); }, parse.GetValue(log), env.Stop);
                            });
                    }
                    else
                    {
                        trainer.Run(OnStep, parse.GetValue(log), env.Stop);
                    }
                }
                // Between steps: the last step finished and is logged. Under MPI a rank stops also when another rank was interrupted.
                catch (OperationCanceledException e) when (env.Stop.IsCancellationRequested || (options.WorldSize > 1 && e.CancellationToken == env.Stop))
                {
                    stopped = true;
                }
                if (metrics.Count > 0)
                    env.Out.WriteLine($"final: {Line(metrics[^1])}");
                // The corpus's entropy rate bounds next-token prediction; a masked-language model's floor differs.
                var floor = cfg.Objective == TrainingObjective.CausalLanguageModel ? (source as SyntheticCorpus)?.EntropyRateNats : null;
                if (floor is { } rate && !stopped)
                    env.Out.WriteLine($"corpus entropy rate (the lowest achievable loss): {rate:F4} nats/token");
                var saved = saveDir is not null && (metrics.Count > 0 || !stopped);
                if (saved)
                {
                    trainer.Save(saveDir!, Note);
                    env.Out.WriteLine($"saved checkpoint to {saveDir} (step {trainer.StepsDone})");
                }
                if (parse.GetValue(plot) is { } plotPath && metrics.Count > 0 && trainer.Writes)
                {
                    LossPlot.Save(plotPath, metrics, floor);
                    env.Out.WriteLine($"wrote {plotPath}");
                }
                // No rank leaves before rank 0 has saved: a rank ending with 130 makes the launcher end the job, rank 0 included.
                collectives.Barrier();
                if (!stopped) return 0;
                env.Out.WriteLine($"interrupted: stopped after step {trainer.StepsDone} of {options.Steps}.");
                env.Out.WriteLine(saved
                    ? $"resume with: {(options.WorldSize > 1 ? $"mpirun -np {options.WorldSize} " : "")}{ResumeCommand(env.Args, saveDir!)}"
                    : "no --save was given, so there is nothing to resume from; add --save DIR to keep a run's progress.");
                return Cli.InterruptedExitCode;
            }
        });
        return command;
    }

    // A checkpoint written by a run spread over other ranks or devices continues: only the order of the gradient sums changes.
    private static string? SpreadNote(IReadOnlyDictionary<string, string> recorded, TrainOptions now)
    {
        static int Count(IReadOnlyDictionary<string, string> m, string key) =>
            m.TryGetValue(key, out var text) && int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : 1;
        int ranks = Count(recorded, TrainOptions.WorldSizeKey), devices = Count(recorded, TrainOptions.DevicesKey);
        return ranks == now.WorldSize && devices == now.Devices ? null
            : $"the checkpoint was written by {DataParallelOptions.Describe(devices, ranks)} and this run has {DataParallelOptions.Describe(now.Devices, now.WorldSize)}; " +
              "that changes only the order in which gradients are summed";
    }

    // Where the run's tokenizer is recorded: beside the data (l2l prepare writes it there), else in the starting checkpoint.
    private static string? TokenizerSource(string? dataPath, string? checkpointDir)
    {
        var dataDir = dataPath is null ? null : Path.GetDirectoryName(Path.GetFullPath(dataPath));
        if (dataDir is not null && TextTokenizers.FromDirectory(dataDir) is not null) return dataDir;
        return checkpointDir is not null && TextTokenizers.FromDirectory(checkpointDir) is not null ? checkpointDir : null;
    }

    private const string CheckpointExpected = "give a checkpoint directory (written by --save: config.json, model.safetensors and training_state.safetensors)";

    /// <summary>The command that continues an interrupted run: as typed, with the model and start taken from the saved checkpoint.</summary>
    internal static string ResumeCommand(IReadOnlyList<string> args, string saveDir)
    {
        string[] dropped = ["--init", "--resume", "--model", "--config", "--override"];
        var kept = new List<string>();
        for (var i = 0; i < args.Count; i++)
        {
            if (dropped.Contains(args[i])) { i++; continue; }
            if (dropped.Any(d => args[i].StartsWith(d + "=", StringComparison.Ordinal))) continue;
            kept.Add(args[i]);
        }
        kept.AddRange(["--resume", saveDir]);
        return "l2l " + string.Join(' ', kept.Select(a => a.Length == 0 || a.Any(char.IsWhiteSpace) ? $"'{a}'" : a));
    }

    internal static OptimizerKind ParseOptimizer(string text) => Enums.Parse<OptimizerKind>(text, "--optimizer");

    /// <summary>
    /// The model the run trains once <c>--unit-scaling</c> is applied: a fresh GPT-2 becomes unit-scaled; a checkpoint's
    /// model is kept, and asking for the other kind (typed, or recorded by the resumed run) is an error, since its
    /// weights only work with the ops they were trained with.
    /// </summary>
    private static IModelConfig UnitScalingModel(ParseResult parse, Option<bool> option, IModelConfig cfg, string? checkpointDir,
        IReadOnlyDictionary<string, string>? recorded)
    {
        bool wanted;
        if (Rules.Given(parse, option)) wanted = parse.GetValue(option);
        else if (recorded is not null && recorded.TryGetValue(RunSettings.UnitScaling, out var text)) wanted = text == "true";
        else wanted = cfg is GptConfig { UnitScaling: true };
        if (cfg is not GptConfig gpt)
            return wanted ? throw new CliException($"--unit-scaling builds a unit-scaled GPT-2, but the model is a {cfg.ModelType} model. Drop --unit-scaling, or train a GPT-2") : cfg;
        if (gpt.UnitScaling == wanted) return gpt;
        if (checkpointDir is null) return gpt with { UnitScaling = wanted };
        throw new CliException(gpt.UnitScaling
            ? $"checkpoint '{checkpointDir}' holds a unit-scaled GPT-2 (\"unit_scaling\": true in its config.json), but the run asks for a standard one. Leave --unit-scaling out to keep the checkpoint's model, or start a standard model afresh"
            : $"checkpoint '{checkpointDir}' holds a standard GPT-2, but --unit-scaling asks for a unit-scaled one, whose ops and initialisation differ. Drop --unit-scaling, or start a unit-scaled model afresh without --init/--resume");
    }

    private static string Describe(TrainOptions o, ITokenSource source, IReadOnlyList<Backend> backends) =>
        $"{o.Config.ModelType}, {o.Config.Layers} layers, {o.Config.Channels} channels, {o.Config.ParameterCount:N0} parameters | " +
        $"{o.Executor.ToString().ToLowerInvariant()}" + (o.Executor == ExecutorKind.Relay ? $" (stash {o.Stash.ToString().ToLowerInvariant()}, {o.ResolvedUpdateMode.ToString().ToLowerInvariant()} updates)" : "") +
        (o.ClipGradNorm is { } clip ? $" | clip {o.ClipMode.ToString().ToLowerInvariant()} norm {clip}" : "") +
        (o.LossScale == L2L.Training.Update.LossScaleMode.Dynamic ? " | dynamic loss scale" : "") +
        (o.StaticLossScale is { } n ? $" | loss scale {n}" : "") +
        (o.OptimizerState == StatePrecision.Bf16 ? " | bf16 optimizer state" : "") +
        (o.LayerDrop > 0 ? $" | layer drop {o.LayerDrop}" : "") + (o.Freeze is { } f ? $" | frozen {f}" : "") +
        (o.Config is GptConfig { UnitScaling: true } ? " | unit-scaled" : "") +
        (o.ResolvedDropout.Any ? $" | dropout embd {o.ResolvedDropout.Embedding} resid {o.ResolvedDropout.Residual}" : "") +
        $" | batch {o.Batch} = {o.MicroBatches} x {o.MicroBatchSize}, seq {o.SeqLen} | {EagerParamServer.OptimizerName(o.Optimizer.Kind)} lr {o.Optimizer.LearningRate} | data: {source.Description} | " +
        (o.IsParallel ? $"{DataParallelOptions.Describe(o.Devices, o.WorldSize)}{(o.ShardOptimizer ? ", sharded optimizer" : "")} (world_size {o.WorldSize}, devices {o.Devices}) | " : "") +
        (backends.Count == 1 ? $"device: {backends[0].Description}" : $"devices: {string.Join("; ", backends.Select(b => b.Description))}") +
        $" | precision {o.Precision.Name()}";

    private static string Line(StepMetrics m) =>
        $"step {m.Step} loss {m.Loss:F4}{(m.ValLoss is { } v ? $" val {v:F4}" : "")} lr {m.LearningRate:G3} grad norm {m.GradNorm:G4} {m.TokensPerSecond:F0} tok/s device peak {MemoryTracker.Format(m.DevicePeakBytes)}" +
        (m.SkippedSteps > 0 ? $" skipped {m.SkippedSteps}" : "") + (m.StashBits is { } bits ? $" stash bits [{string.Join(",", bits)}]" : "") +
        (m.OverflowedLayers is { } over ? $" overflowed, not updated: {string.Join(",", over)}" : "");
}
