// The settings that decide a run's buffers: model, micro-batch shape, executor, stash and update placement, device limits.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;
using L2L.Training.Optim;
using L2L.Training.Stash;
using L2L.Training.Update;

namespace L2L.Training.Planning;

/// <summary>
/// Everything a run's device, host and bus bytes depend on. Precision is per buffer (<see cref="BufferSpec.ElementSize"/>);
/// the engine computes in FP32 only, so every activation and weight buffer is planned with 4-byte elements.
/// </summary>
/// <param name="Config">The model.</param>
/// <param name="MicroBatchSize">Sequences per micro-batch.</param>
/// <param name="MicroBatches">U.</param>
/// <param name="SeqLen">Tokens per sequence.</param>
/// <param name="Executor">Relay or conventional.</param>
/// <param name="Stash">Relay stash placement.</param>
/// <param name="Codec">Relay stash codec.</param>
/// <param name="Optimizer">The optimizer (its state size).</param>
/// <param name="EmbeddingUpdate">Relay: where the embedding and head are updated.</param>
/// <param name="UpdateMode">Relay: eager (a gradient ring) or deferred (a buffer per host-updated layer).</param>
/// <param name="OptimizerState">Relay: FP32 or BF16 host optimizer state.</param>
/// <param name="Device">The device's limits (a few scratch lengths depend on them).</param>
/// <param name="GradientSlots">The param server's gradient ring.</param>
/// <param name="Precision">Relay: what the param server sends and receives (a 16-bit copy of the weights and 16-bit gradients, or FP32).</param>
public sealed record PlanSettings(IModelConfig Config, int MicroBatchSize, int MicroBatches, int SeqLen, ExecutorKind Executor,
    StashPlacement Stash, StashCodecSettings Codec, OptimizerKind Optimizer, UpdateLocation EmbeddingUpdate, UpdateMode UpdateMode,
    StatePrecision OptimizerState, DeviceShape Device, int GradientSlots = EagerParamServer.DefaultGradientSlots, Precision Precision = Precision.Fp32)
{
    /// <summary>The settings of a training run on a device of <paramref name="device"/>'s shape.</summary>
    public static PlanSettings From(TrainOptions options, DeviceShape device) =>
        new(options.Config, options.MicroBatchSize, options.MicroBatches, options.SeqLen, options.Executor, options.Stash,
            options.StashCodecSettings, options.Optimizer.Kind, options.ResolvedEmbeddingUpdate, options.ResolvedUpdateMode,
            options.OptimizerState, device);

    /// <summary>One micro-batch's shape.</summary>
    public MicroBatch MicroBatch => new(Config, MicroBatchSize, SeqLen);

    /// <summary>Sequences per step.</summary>
    public int Batch => MicroBatchSize * MicroBatches;

    /// <summary>Whether the relay keeps the embedding and head, with their optimizer, on the device.</summary>
    public bool ResidentEmbedding => Executor == ExecutorKind.Relay && EmbeddingUpdate == UpdateLocation.Device;

    /// <summary>AdamW and LAMB keep two state floats per parameter, SGD none.</summary>
    public int StateFloatsPerParam => Optimizer == OptimizerKind.Sgd ? 0 : 2;
}
