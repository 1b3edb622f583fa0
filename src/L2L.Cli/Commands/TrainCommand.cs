// `l2l train`: trains a GPT-2 or BERT model with the relay or conventional executor.
using System.CommandLine;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training;
using L2L.Training.Optim;
using Spectre.Console;

namespace L2L.Cli.Commands;

internal static class TrainCommand
{
    public static Command Create()
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
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var seed = new Option<int>("--seed") { Description = "Seed for initialisation and shuffling.", DefaultValueFactory = _ => 1337 };
        var shuffle = new Option<bool>("--shuffle") { Description = "Take windows in a seeded random order." };
        var save = new Option<string?>("--save") { Description = "Checkpoint directory written at the end (and every --save-every steps)." };
        var saveEvery = new Option<int>("--save-every") { Description = "Also save every N steps (0: only at the end).", DefaultValueFactory = _ => 0 };
        var resume = new Option<string?>("--resume") { Description = "Continue from this checkpoint directory (weights, optimizer state, step)." };
        var log = new Option<string?>("--log") { Description = "Write one JSON object per step to this file." };
        var plot = new Option<string?>("--plot") { Description = "Write a PNG plot of the loss curve to this file." };
        var threads = new Option<int?>("--optimizer-threads") { Description = "Host threads for the optimizer (default: all cores)." };
        var embeddingUpdate = new Option<string?>("--embedding-update") { Description = "Relay: update the embedding and head on the device (default for sgd/adamw: no step-boundary wait) or on the host (default for lamb)." };
        var budget = new Option<long?>("--device-budget") { Description = "Cap on device bytes the engine may allocate (simulates a smaller device)." };
        var updateMode = new Option<string?>("--update-mode") { Description = "Relay host updates: eager (as gradients arrive) or deferred (after backward, in forward order; default with global clipping or loss scaling)." };
        var clipNorm = new Option<float?>("--clip-grad-norm") { Description = "Clip gradients to this L2 norm (PyTorch clip_grad_norm_; global norm: selects deferred updates)." };
        var clipMode = new Option<string>("--clip-mode") { Description = "global (one norm over the whole model) or layer (each layer by its own norm; keeps eager updates).", DefaultValueFactory = _ => "global" };
        var dropout = new Option<float?>("--dropout") { Description = "Dropout P on the embedding and each residual branch (embd_pdrop, resid_pdrop; attention-probability dropout is not implemented). Default: the config's." };
        var layerDrop = new Option<float>("--layer-drop") { Description = "Stochastic depth: skip each block with this probability per step (seeded; not fetched, stashed or updated).", DefaultValueFactory = _ => 0f };
        var freeze = new Option<string?>("--freeze") { Description = "Layers never updated, e.g. embedding,0-5 (also head and block numbers); backward stops below the lowest trainable layer." };
        var optimizerState = new Option<string>("--optimizer-state") { Description = "Relay: the param server's AdamW m and v in fp32, or bf16 (stochastic rounding, 4 fewer host bytes per parameter, not exact).", DefaultValueFactory = _ => "fp32" };
        var lossScale = new Option<string>("--loss-scale") { Description = "none or dynamic (GradScaler semantics; with FP32 gradients it only exercises the machinery).", DefaultValueFactory = _ => "none" };

        var command = new Command("train", "Train a GPT-2 or BERT model with L2L relay execution (or the conventional baseline).");
        foreach (var o in new Option[] { model, config, init, data, labels, steps, batch, micro, seq, optimizer, lr, wd, beta1, beta2, eps, warmup, schedule, executor, stash, device, seed, shuffle, save, saveEvery, resume, log, plot, threads, embeddingUpdate, budget, updateMode, clipNorm, clipMode, lossScale, dropout, layerDrop, freeze, optimizerState })
            command.Options.Add(o);

        command.SetAction(parse => CliErrors.Run(() =>
        {
            var initDir = parse.GetValue(init);
            var resumeDir = parse.GetValue(resume);
            if (initDir is not null && resumeDir is not null)
                throw new ArgumentException("Use either --init (weights only) or --resume (weights, optimizer state and step), not both.");
            var explicitConfig = parse.GetValue(config) is { } path ? ModelConfigs.Load(path)
                : parse.GetResult(model) is { Implicit: false } ? ModelConfigs.Preset(parse.GetValue(model)!) : null;
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
                        throw new InvalidDataException($"'{resumeDir}' has no {Checkpoint.StateFile}; use --init to start from its weights with a fresh optimizer.");
                    state = Checkpoint.LoadTrainingState(resumeDir, new ModelLayout(cfg));
                }
            }
            else
            {
                cfg = explicitConfig ?? ModelConfigs.Preset(parse.GetValue(model)!);
            }

            var options = new TrainOptions
            {
                Config = cfg,
                Steps = parse.GetValue(steps),
                Batch = parse.GetValue(batch),
                MicroBatches = parse.GetValue(micro),
                SeqLen = parse.GetValue(seq),
                Optimizer = new OptimizerSettings(ParseOptimizer(parse.GetValue(optimizer)!), parse.GetValue(lr), parse.GetValue(beta1), parse.GetValue(beta2), parse.GetValue(eps), parse.GetValue(wd)),
                Schedule = Enums.Parse<ScheduleKind>(parse.GetValue(schedule)!, "--schedule"),
                Warmup = parse.GetValue(warmup),
                Executor = Enums.Parse<ExecutorKind>(parse.GetValue(executor)!, "--executor"),
                Stash = Enums.Parse<StashPlacement>(parse.GetValue(stash)!, "--stash"),
                Seed = parse.GetValue(seed),
                Shuffle = parse.GetValue(shuffle),
                OptimizerThreads = parse.GetValue(threads),
                DeviceBudgetBytes = parse.GetValue(budget),
                EmbeddingUpdate = parse.GetValue(embeddingUpdate) is { } where ? Enums.Parse<L2L.Training.Update.UpdateLocation>(where, "--embedding-update") : null,
                UpdateMode = parse.GetValue(updateMode) is { } um ? Enums.Parse<L2L.Training.Update.UpdateMode>(um, "--update-mode") : null,
                ClipGradNorm = parse.GetValue(clipNorm),
                Dropout = parse.GetValue(dropout),
                LayerDrop = parse.GetValue(layerDrop),
                OptimizerState = Enums.Parse<StatePrecision>(parse.GetValue(optimizerState)!, "--optimizer-state"),
                Freeze = parse.GetValue(freeze),
                ClipMode = Enums.Parse<L2L.Training.Update.ClipMode>(parse.GetValue(clipMode)!, "--clip-mode"),
                LossScale = Enums.Parse<L2L.Training.Update.LossScaleMode>(parse.GetValue(lossScale)!, "--loss-scale"),
            };
            options.Validate();
            var source = DataSources.Open(parse.GetValue(data), cfg.VocabSize);
            var labelSource = parse.GetValue(labels) is { } labelsPath ? MlmBatchLoader.OpenLabels(labelsPath) : null;

            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            AnsiConsole.MarkupLine($"[bold]l2l train[/] {Markup.Escape(Describe(options, source, backend))}");
            using var trainer = new Trainer(backend, options, source, weights, state, labelSource);
            if (trainer.HostBytesPerParameter is { } hostBytes)
                Console.WriteLine($"param server: {hostBytes:F2} host bytes per parameter (FP32 weights, optimizer state, " +
                    (options.ResolvedUpdateMode == L2L.Training.Update.UpdateMode.Deferred ? "a gradient buffer per host-updated layer)" : "a ring of gradient buffers)"));
            var saveDir = parse.GetValue(save);
            var every = parse.GetValue(saveEvery);
            var metrics = new List<StepMetrics>();
            var interactive = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;
            void OnStep(StepMetrics m)
            {
                metrics.Add(m);
                if (saveDir is not null && every > 0 && m.Step % every == 0 && m.Step < options.Steps)
                    trainer.Save(saveDir);
                if (!interactive && (m.Step % 10 == 0 || m.Step == options.Steps || metrics.Count == 1))
                    Console.WriteLine(Line(m));
            }
            var start = trainer.StepsDone;
            if (interactive)
            {
                AnsiConsole.Progress()
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask("starting", maxValue: options.Steps - start);
                        trainer.Run(m => { OnStep(m); task.Description = Markup.Escape(Line(m)); task.Increment(1); }, parse.GetValue(log));
                    });
            }
            else
            {
                trainer.Run(OnStep, parse.GetValue(log));
            }
            if (metrics.Count > 0)
                Console.WriteLine($"final: {Line(metrics[^1])}");
            // The corpus's entropy rate bounds next-token prediction; a masked-language model's floor differs.
            var floor = cfg.Objective == TrainingObjective.CausalLanguageModel ? (source as SyntheticCorpus)?.EntropyRateNats : null;
            if (floor is not null && source is SyntheticCorpus corpus)
                Console.WriteLine($"corpus entropy rate (the lowest achievable loss): {corpus.EntropyRateNats:F4} nats/token");
            if (saveDir is not null)
            {
                trainer.Save(saveDir);
                Console.WriteLine($"saved checkpoint to {saveDir}");
            }
            if (parse.GetValue(plot) is { } plotPath && metrics.Count > 0)
            {
                LossPlot.Save(plotPath, metrics, floor);
                Console.WriteLine($"wrote {plotPath}");
            }
            return 0;
        }));
        return command;
    }

    internal static OptimizerKind ParseOptimizer(string text) => Enums.Parse<OptimizerKind>(text, "--optimizer");

    private static string Describe(TrainOptions o, ITokenSource source, Backend backend) =>
        $"{o.Config.ModelType}, {o.Config.Layers} layers, {o.Config.Channels} channels, {o.Config.ParameterCount:N0} parameters | " +
        $"{o.Executor.ToString().ToLowerInvariant()}" + (o.Executor == ExecutorKind.Relay ? $" (stash {o.Stash.ToString().ToLowerInvariant()}, {o.ResolvedUpdateMode.ToString().ToLowerInvariant()} updates)" : "") +
        (o.ClipGradNorm is { } clip ? $" | clip {o.ClipMode.ToString().ToLowerInvariant()} norm {clip}" : "") +
        (o.LossScale == L2L.Training.Update.LossScaleMode.Dynamic ? " | dynamic loss scale" : "") +
        (o.OptimizerState == StatePrecision.Bf16 ? " | bf16 optimizer state" : "") +
        (o.LayerDrop > 0 ? $" | layer drop {o.LayerDrop}" : "") + (o.Freeze is { } f ? $" | frozen {f}" : "") +
        (o.ResolvedDropout.Any ? $" | dropout embd {o.ResolvedDropout.Embedding} resid {o.ResolvedDropout.Residual}" : "") +
        $" | batch {o.Batch} = {o.MicroBatches} x {o.MicroBatchSize}, seq {o.SeqLen} | {EagerParamServer.OptimizerName(o.Optimizer.Kind)} lr {o.Optimizer.LearningRate} | data: {source.Description} | device: {backend.Description}";

    private static string Line(StepMetrics m) =>
        $"step {m.Step} loss {m.Loss:F4} lr {m.LearningRate:G3} grad norm {m.GradNorm:G4} {m.TokensPerSecond:F0} tok/s device peak {MemoryTracker.Format(m.DevicePeakBytes)}" +
        (m.SkippedSteps > 0 ? $" skipped {m.SkippedSteps}" : "");
}
