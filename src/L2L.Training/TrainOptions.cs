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

    /// <summary>The stash codec these options describe, keyed by <see cref="Seed"/>.</summary>
    public StashCodecSettings StashCodecSettings => new(StashCodec, StashGroup, (ulong)(uint)Seed);
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

    /// <summary>Where the relay updates the embedding and head layers, with the default resolved.</summary>
    public Update.UpdateLocation ResolvedEmbeddingUpdate =>
        EmbeddingUpdate ?? (Update.DeviceLayerOptimizer.Supports(Optimizer.Kind) ? Update.UpdateLocation.Device : Update.UpdateLocation.Host);

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
        if (StashCodec != StashCodec.None && Executor != ExecutorKind.Relay)
            throw new ArgumentException("--stash-codec compresses the relay's stash and needs --executor relay.");
        StashCodecSettings.Validate();
        if (!(Optimizer.LearningRate > 0) || !float.IsFinite(Optimizer.LearningRate)) throw new ArgumentException("--lr must be a positive number.");
        if (Optimizer.WeightDecay < 0) throw new ArgumentException("--weight-decay must not be negative.");
        if (Executor == ExecutorKind.Conventional && Optimizer.Kind == OptimizerKind.Lamb)
            throw new ArgumentException("--optimizer lamb runs on the host and needs --executor relay.");
        if (EmbeddingUpdate == Update.UpdateLocation.Device && !Update.DeviceLayerOptimizer.Supports(Optimizer.Kind))
            throw new ArgumentException($"--embedding-update device needs an optimizer with a device kernel (sgd, adamw), not {Optimizer.Kind.ToString().ToLowerInvariant()}; use --embedding-update host.");
    }

    /// <summary>The learning-rate schedule these options describe.</summary>
    public LearningRateSchedule LearningRate => new(Schedule, Optimizer.LearningRate, Warmup, Steps);
}
