// What every executor offers the training loop: one synchronous optimizer step over a minibatch.
using L2L.Model;

namespace L2L.Training;

/// <summary>Which executor runs the model.</summary>
public enum ExecutorKind
{
    /// <summary>L2L relay: one layer on the device at a time, across all micro-batches; weights and optimizer on the host.</summary>
    Relay,
    /// <summary>The whole model, its gradients and optimizer state resident on the device; the baseline.</summary>
    Conventional,
}

/// <summary>Where the relay executor keeps the stashed layer inputs and the boundary gradients.</summary>
public enum StashPlacement
{
    /// <summary>On the device: grows with layers x micro-batches.</summary>
    Device,
    /// <summary>On the host, streamed through a few device slots: device memory independent of depth and micro-batch count.</summary>
    Host,
}

/// <summary>The outcome of one training step.</summary>
/// <param name="Loss">Mean cross-entropy over the labelled targets of the minibatch (every token for GPT-2).</param>
/// <param name="BusBytes">Bytes moved between host and device during the step.</param>
/// <param name="CopyWaitSeconds">Time the host spent blocked on the copy stream, i.e. transfers that compute did not hide.</param>
/// <param name="UpdateWaitSeconds">Time the host spent blocked before a layer's fetch, waiting for the param server to finish updating it.</param>
/// <param name="GradNorm">The global L2 norm of the step's (unscaled) parameter gradients, before any clipping.</param>
/// <param name="Skipped">Whether the step updated nothing because its gradients overflowed (dynamic loss scaling).</param>
/// <param name="LossScale">The loss scale for the next step (1 without dynamic loss scaling).</param>
/// <param name="SkippedSteps">Steps skipped so far in the run.</param>
/// <param name="BlocksRun">Transformer blocks that ran this step (fewer than the model's under layer drop).</param>
/// <param name="BackwardLayers">Layers whose backward pass ran (blocks and embedding; fewer with frozen bottom layers).</param>
/// <param name="CollectiveSeconds">Time this rank spent inside cross-rank collectives during the step (0 with one rank).</param>
/// <param name="CollectiveHiddenSeconds">
/// The part of <paramref name="CollectiveSeconds"/> that device work hid: the collective time minus the time the step's
/// threads were blocked waiting for a collective's result (a fetch waiting for a layer's reduction, the loss and
/// label-count sums), never below 0.
/// </param>
/// <param name="BusBytesByKind">The step's bus bytes by kind; their total is <paramref name="BusBytes"/>.</param>
/// <param name="StashBits">With a relay stash codec, the bits each stash level was stored at this step (null without one).</param>
/// <param name="OverflowedLayers">
/// Layers whose gradients held an inf or NaN this step and were therefore not updated (null: none). Without dynamic loss
/// scaling an eager update skips only those layers; a deferred one (global clipping) skips the step's updates.
/// </param>
public readonly record struct StepResult(double Loss, long BusBytes, double CopyWaitSeconds = 0, double UpdateWaitSeconds = 0,
    double GradNorm = double.NaN, bool Skipped = false, float LossScale = 1f, long SkippedSteps = 0, int BlocksRun = 0, int BackwardLayers = 0,
    double CollectiveSeconds = 0, double CollectiveHiddenSeconds = 0, Planning.BusTraffic BusBytesByKind = default, IReadOnlyList<int>? StashBits = null,
    IReadOnlyList<string>? OverflowedLayers = null);

/// <summary>A training executor. Steps are synchronous: after <see cref="Step"/> returns, the loss is final; weight updates may still be finishing on host threads but are awaited before any later use.</summary>
public interface IExecutor : IDisposable
{
    /// <summary>
    /// Runs forward, backward and the optimizer for 0-based step <paramref name="step"/> on a minibatch of (B, T)
    /// inputs and targets (<see cref="L2L.Model.Device.MicroBatchInputs.IgnoreIndex"/> where unlabelled) and,
    /// for a model that reads them, token types (empty: all 0).
    /// </summary>
    StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default);

    /// <summary>The current weights, one array per layer of the layout.</summary>
    float[][] Weights();

    /// <summary>The optimizer state for a checkpoint.</summary>
    TrainingState State(IReadOnlyDictionary<string, string>? metadata = null);

    /// <summary>Optimizer steps completed.</summary>
    long StepsDone { get; }
}
