// Everything a training run is configured by; the CLI fills it from its options.
using L2L.Backends;
using L2L.Model;
using L2L.Training.Optim;
using L2L.Training.Stash;

namespace L2L.Training;

/// <summary>The settings of one training run.</summary>
public sealed record TrainOptions
{
    /// <summary>The model (from a preset, a config.json, or the --init/--resume checkpoint): GPT-2 or BERT.</summary>
    public required IModelConfig Config { get; init; }
    /// <summary>Optimizer steps to reach (a resumed run continues up to this count).</summary>
    public long Steps { get; init; } = 100;
    /// <summary>Sequences per step (B), split into <see cref="MicroBatches"/> micro-batches.</summary>
    public int Batch { get; init; } = 8;
    /// <summary>Micro-batches per step (U); must divide <see cref="Batch"/>.</summary>
    public int MicroBatches { get; init; } = 1;
    /// <summary>Tokens per sequence (T).</summary>
    public int SeqLen { get; init; } = 64;
    /// <summary>Optimizer kind and hyper-parameters (the learning rate here is the peak).</summary>
    public OptimizerSettings Optimizer { get; init; } = new(OptimizerKind.AdamW, 1e-3f);
    /// <summary>Constant or cosine.</summary>
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Constant;
    /// <summary>Linear warmup steps.</summary>
    public int Warmup { get; init; }
    /// <summary>Relay or conventional.</summary>
    public ExecutorKind Executor { get; init; } = ExecutorKind.Relay;
    /// <summary>Stash placement for the relay executor.</summary>
    public StashPlacement Stash { get; init; } = StashPlacement.Device;
    /// <summary>Relay only: how the stashed block inputs are stored (FP32, or 8/4/2-bit codes with per-group ranges).</summary>
    public StashCodec StashCodec { get; init; } = StashCodec.None;
    /// <summary>Values per quantisation group of the stash codec (a multiple of 16).</summary>
    public int StashGroup { get; init; } = StashCodecSettings.DefaultGroupSize;

    /// <summary>Adaptive stash codec: the average bits per stash level may not exceed this (in [2, 8]).</summary>
    public float StashBitsBudget { get; init; } = StashCodecSettings.DefaultBitsBudget;
    /// <summary>Adaptive stash codec: re-estimate the bits at every step that is a multiple of this.</summary>
    public int StashAdaptEvery { get; init; } = StashCodecSettings.DefaultAdaptEvery;

    /// <summary>The stash codec these options describe, keyed by <see cref="Seed"/>.</summary>
    public StashCodecSettings StashCodecSettings => new(StashCodec, StashGroup, (ulong)(uint)Seed, StashBitsBudget, StashAdaptEvery);
    /// <summary>Seed for initialisation and shuffling.</summary>
    public int Seed { get; init; } = 1337;
    /// <summary>Take windows in a seeded random order instead of in sequence.</summary>
    public bool Shuffle { get; init; }
    /// <summary>Host threads for the optimizer (null: all cores).</summary>
    public int? OptimizerThreads { get; init; }
    /// <summary>
    /// Relay only: where the embedding and head layers (resident on the device all step) are updated;
    /// null picks the device when the optimizer has a device kernel (SGD, AdamW), else the host.
    /// </summary>
    public Update.UpdateLocation? EmbeddingUpdate { get; init; }
    /// <summary>Optional cap on tracked device bytes (simulates a smaller device).</summary>
    public long? DeviceBudgetBytes { get; init; }
    /// <summary>Relay: eager or deferred host updates; null picks deferred when global clipping or dynamic loss scaling needs it.</summary>
    public Update.UpdateMode? UpdateMode { get; init; }
    /// <summary>Clip gradients to this L2 norm (PyTorch <c>clip_grad_norm_</c>), or null for no clipping.</summary>
    public float? ClipGradNorm { get; init; }
    /// <summary>Clip by the global norm (needs deferred updates) or by each layer's own norm.</summary>
    public Update.ClipMode ClipMode { get; init; } = Update.ClipMode.Global;
    /// <summary>Dynamic loss scaling (needs deferred updates).</summary>
    public Update.LossScaleMode LossScale { get; init; } = Update.LossScaleMode.None;
    /// <summary>
    /// A static loss scale (<c>--loss-scale N</c>): the loss gradient is multiplied by N on the device and the gradients
    /// divided by N on the host before the update; a layer whose gradients overflowed is skipped and reported. Null: none.
    /// </summary>
    public float? StaticLossScale { get; init; }
    /// <summary>
    /// <c>--dropout P</c>: sets the embedding and residual drop probabilities (and attention-probability dropout to 0,
    /// which is not implemented), overriding the config's; null keeps the config's rates.
    /// </summary>
    public float? Dropout { get; init; }

    /// <summary>The drop probabilities training uses.</summary>
    public Model.Device.DropoutRates ResolvedDropout => Dropout is { } p ? new(p, 0f, p) : Config.Dropout;

    /// <summary>Stochastic depth: the probability that a block is skipped in a step (seeded, the same for every micro-batch).</summary>
    public float LayerDrop { get; init; }
    /// <summary><c>--freeze</c>: layers never updated, e.g. <c>embedding,0-5</c> (see <see cref="Update.LayerSelection.ParseFreeze"/>).</summary>
    public string? Freeze { get; init; }

    /// <summary>The layer selection (layer drop, frozen layers) these options describe.</summary>
    public Update.LayerSelection Selection(ModelLayout layout) =>
        new(layout, LayerDrop, Seed, Freeze is null ? null : Update.LayerSelection.ParseFreeze(Freeze, layout));

    /// <summary>
    /// How weights, activations, the stash and boundary gradients are stored on the device and carried over the bus (FP32, or
    /// BF16/FP16 with FP32 master weights, optimizer state and gradient accumulation); see <see cref="Backends.Precision"/>.
    /// </summary>
    public Backends.Precision Precision { get; init; } = Backends.Precision.Fp32;

    /// <summary>Relay: how the param server stores AdamW's m and v (FP32, or BF16 with stochastic rounding, not exact).</summary>
    public Optim.StatePrecision OptimizerState { get; init; } = Optim.StatePrecision.Fp32;

    /// <summary>Data parallel: accelerators this process trains on (each runs an equal share of a rank's micro-batches).</summary>
    public int Devices { get; init; } = 1;
    /// <summary>Data parallel: MPI ranks of the job (each runs sequences r, r+R, … of every minibatch).</summary>
    public int WorldSize { get; init; } = 1;
    /// <summary>With several ranks: each keeps the weights and optimizer state of 1/R of every layer.</summary>
    public bool ShardOptimizer { get; init; }

    /// <summary>Whether the step is shared among more than one device or rank (every layer is then updated on the host).</summary>
    public bool IsParallel => Devices * WorldSize > 1;

    /// <summary>Micro-batches each rank runs per step.</summary>
    public int MicroBatchesPerRank => MicroBatches / WorldSize;

    /// <summary>Checkpoint metadata keys recording how the run was spread (informative: a change alters only the order of gradient sums).</summary>
    public const string WorldSizeKey = "world_size", DevicesKey = "devices", ShardOptimizerKey = "shard_optimizer";

    /// <summary>A test hook: poison one layer's gradient at one step (an injected overflow).</summary>
    public Update.GradientFault? GradientFault { get; init; }

    /// <summary>The update mode with the default resolved: deferred when the global norm or an overflow check must precede every update.</summary>
    public Update.UpdateMode ResolvedUpdateMode =>
        UpdateMode ?? ((ClipGradNorm is not null && ClipMode == Update.ClipMode.Global) || LossScale == Update.LossScaleMode.Dynamic
            ? Update.UpdateMode.Deferred : Update.UpdateMode.Eager);

    /// <summary>Where the relay updates the embedding and head layers, with the default resolved.</summary>
    public Update.UpdateLocation ResolvedEmbeddingUpdate =>
        IsParallel ? Update.UpdateLocation.Host : EmbeddingUpdate ?? (Update.DeviceLayerOptimizer.Supports(Optimizer.Kind) ? Update.UpdateLocation.Device : Update.UpdateLocation.Host);

    /// <summary>The micro-batch shape.</summary>
    public int MicroBatchSize => Batch / MicroBatches;

    /// <summary>Throws with a clear message when the settings do not make sense together.</summary>
    public void Validate()
    {
        Config.Validate();
        if (Steps < 1) throw new ArgumentException("--steps must be at least 1.");
        if (Batch < 1) throw new ArgumentException("--batch must be at least 1.");
        if (MicroBatches < 1) throw new ArgumentException("--micro-batches must be at least 1.");
        if (Batch % MicroBatches != 0)
            throw new ArgumentException($"--batch {Batch} is not divisible by --micro-batches {MicroBatches}: each micro-batch must hold the same number of sequences.");
        if (SeqLen < 1 || SeqLen > Config.MaxPositions)
            throw new ArgumentException($"--seq {SeqLen} must be between 1 and the model's longest sequence (n_positions / max_position_embeddings = {Config.MaxPositions}).");
        if (Warmup < 0) throw new ArgumentException("--warmup must not be negative.");
        if (Devices < 1 || WorldSize < 1) throw new ArgumentException($"A run needs at least one device and one rank, not {Devices} and {WorldSize}.");
        if (MicroBatches % WorldSize != 0 || MicroBatchesPerRank % Devices != 0)
            throw new ArgumentException($"--micro-batches {MicroBatches} does not split across {WorldSize} rank(s) of {Devices} device(s): use a multiple of {WorldSize * Devices}.");
        if (ShardOptimizer && WorldSize < 2)
            throw new ArgumentException("--shard-optimizer splits the param server across MPI ranks and needs at least two.");
        if (IsParallel && Executor != ExecutorKind.Relay)
            throw new ArgumentException("--executor conventional runs on one device in one process; data parallel training needs --executor relay.");
        if (IsParallel && LossScale == Update.LossScaleMode.Dynamic)
            throw new ArgumentException("--loss-scale dynamic is not implemented for data parallel training: use --loss-scale none, or one device.");
        if (StaticLossScale is { } fixedScale && (!(fixedScale > 0f) || !float.IsFinite(fixedScale)))
            throw new ArgumentException($"--loss-scale {fixedScale} must be a positive number (or 'dynamic').");
        if (StaticLossScale is not null && LossScale == Update.LossScaleMode.Dynamic)
            throw new ArgumentException("A loss scale is either a number (static) or 'dynamic', not both.");
        if (IsParallel && StaticLossScale is not null)
            throw new ArgumentException("A static --loss-scale is not implemented for data parallel training: drop --loss-scale, or use one device.");
        if (ShardOptimizer && ResolvedUpdateMode == Update.UpdateMode.Deferred)
            throw new ArgumentException("Deferred updates (global clipping's default) keep every layer's reduced gradients, which --shard-optimizer does not: drop one of them, or use --clip-mode layer.");
        if (ShardOptimizer && (OptimizerState == Optim.StatePrecision.Bf16 || Optimizer.Kind == OptimizerKind.Lamb))
            throw new ArgumentException("--shard-optimizer keeps FP32 state and splits every tensor: use --optimizer-state fp32 and --optimizer adamw or sgd with it.");
        if (IsParallel && EmbeddingUpdate == Update.UpdateLocation.Device)
            throw new ArgumentException("--embedding-update device keeps the embedding and head on one device; with several devices or ranks every layer is updated on the host. Use --embedding-update host or auto.");
        if (StashCodec != StashCodec.None && Executor != ExecutorKind.Relay)
            throw new ArgumentException("--stash-codec compresses the relay's stash and needs --executor relay.");
        StashCodecSettings.Validate();
        if (!(Optimizer.LearningRate > 0) || !float.IsFinite(Optimizer.LearningRate)) throw new ArgumentException("--lr must be a positive number.");
        if (Optimizer.WeightDecay < 0) throw new ArgumentException("--weight-decay must not be negative.");
        if (Executor == ExecutorKind.Conventional && Optimizer.Kind == OptimizerKind.Lamb)
            throw new ArgumentException("--optimizer lamb runs on the host and needs --executor relay.");
        if (OptimizerState == Optim.StatePrecision.Bf16 && (Optimizer.Kind != OptimizerKind.AdamW || Executor != ExecutorKind.Relay))
            throw new ArgumentException("--optimizer-state bf16 stores the param server's AdamW moments: it needs --optimizer adamw and --executor relay.");
        if (!(LayerDrop >= 0f && LayerDrop < 1f))
            throw new ArgumentException($"--layer-drop {LayerDrop} must be in [0, 1).");
        if (Freeze is not null)
        {
            var layout = new ModelLayout(Config);
            if (Update.LayerSelection.ParseFreeze(Freeze, layout).Count == layout.Layers.Count)
                throw new ArgumentException($"--freeze '{Freeze}' freezes every layer: nothing would train.");
        }
        if (Dropout is { } drop && !(drop >= 0f && drop < 1f))
            throw new ArgumentException($"--dropout {drop} must be in [0, 1).");
        if (ResolvedDropout.Any && !Config.SupportsDropout)
            throw new ArgumentException($"The {Config.ModelType} model has no dropout call sites; drop --dropout (and set its config's dropout probabilities to 0).");
        if (ResolvedDropout.Any && Config is GptConfig { UnitScaling: true })
            throw new ArgumentException("The unit-scaled GPT-2 does not support dropout; drop --dropout (and keep its config's dropout probabilities at 0).");
        if (ResolvedDropout.Attention > 0)
            throw new ArgumentException($"attn_pdrop {ResolvedDropout.Attention}: dropout on attention probabilities is not implemented (the attention kernels keep no probabilities to mask). " +
                "Set \"attn_pdrop\": 0 in config.json, or pass --dropout P, which sets embd_pdrop and resid_pdrop to P and attn_pdrop to 0.");
        if (ClipGradNorm is { } clip && !(clip > 0 && float.IsFinite(clip)))
            throw new ArgumentException($"--clip-grad-norm {clip} must be a positive number.");
        if (UpdateMode == Update.UpdateMode.Eager && ClipGradNorm is not null && ClipMode == Update.ClipMode.Global)
            throw new ArgumentException("--clip-grad-norm clips by the global norm, which is known only after backward: use --update-mode deferred (the default with clipping) or --clip-mode layer.");
        if (UpdateMode == Update.UpdateMode.Eager && LossScale == Update.LossScaleMode.Dynamic)
            throw new ArgumentException("--loss-scale dynamic must see every gradient before any update: use --update-mode deferred (the default with it).");
        if (Precision == Backends.Precision.Fp16 && IsParallel)
            throw new ArgumentException("--precision fp16 is not implemented for data parallel training (an overflowed layer would have to be skipped on every device and rank alike): use --precision bf16, or one device.");
        if (Precision.Is16Bit() && ShardOptimizer)
            throw new ArgumentException($"--precision {Backends.Precisions.Name(Precision)} with --shard-optimizer is not implemented: use --precision fp32, or leave --shard-optimizer off.");
        if (EmbeddingUpdate == Update.UpdateLocation.Device && !Update.DeviceLayerOptimizer.Supports(Optimizer.Kind))
            throw new ArgumentException($"--embedding-update device needs an optimizer with a device kernel (sgd, adamw), not {Optimizer.Kind.ToString().ToLowerInvariant()}; use --embedding-update host.");
    }

    /// <summary>The learning-rate schedule these options describe.</summary>
    public LearningRateSchedule LearningRate => new(Schedule, Optimizer.LearningRate, Warmup, Steps);
}
