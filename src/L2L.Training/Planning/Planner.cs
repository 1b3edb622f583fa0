// The one description of a run's buffers: the relay and conventional executors allocate from it, `l2l plan` prints it.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model;
using L2L.Model.Device;
using L2L.Training.Stash;
using L2L.Training.Update;

namespace L2L.Training.Planning;

/// <summary>
/// Builds the <see cref="ExecutionPlan"/> of a configuration from the same static descriptions the allocating code
/// uses (the model's activations and scratch, the inputs, the codec's stash, the device optimizer, the param server),
/// so the plan is exact: no device, no kernels and no memory beyond the lists themselves.
/// </summary>
/// <remarks>
/// The plan covers training as <c>l2l train</c> runs it without layer drop, frozen layers, per-layer clipping or
/// validation (validation adds an evaluator's buffers).
/// </remarks>
public static class Planner
{
    /// <summary>The plan of <paramref name="settings"/>.</summary>
    public static ExecutionPlan Plan(PlanSettings settings)
    {
        var layout = new ModelLayout(settings.Config);
        return settings.Executor == ExecutorKind.Relay
            ? new ExecutionPlan(settings, RelayDevice(settings, layout), RelayHost(settings, layout), RelayBus(settings, layout))
            : new ExecutionPlan(settings, ConventionalDevice(settings, layout), ConventionalHost(settings), ConventionalBus(settings, layout));
    }

    private static long BlockLength(ModelLayout layout) => layout.Blocks.Count > 0 ? layout.Blocks[0].Length : 0;

    /// <summary>The relay executor's device buffers, in the order it allocates them.</summary>
    public static IReadOnlyList<BufferSpec> RelayDevice(PlanSettings s, ModelLayout layout)
    {
        var mb = s.MicroBatch;
        var a = mb.ActivationLength;
        var u = s.MicroBatches;
        var l = layout.Blocks.Count;
        var block = BlockLength(layout);
        var list = new List<BufferSpec>
        {
            new("grad-norm.partials", MemoryCategory.Workspace, ReduceOps.PartialsLength(s.Device)),
            new("grad-norm.sums", MemoryCategory.Workspace, 4),
            new("block-slot.0", MemoryCategory.Params, block), new("block-slot.1", MemoryCategory.Params, block),
            new("block-grads.0", MemoryCategory.Grads, block), new("block-grads.1", MemoryCategory.Grads, block),
            new("embedding", MemoryCategory.Params, layout.Embedding.Length), new("embedding.grads", MemoryCategory.Grads, layout.Embedding.Length),
            new("head", MemoryCategory.Params, layout.Head.Length), new("head.grads", MemoryCategory.Grads, layout.Head.Length),
        };
        list.AddRange(Models.DescribeActivations(mb));
        list.AddRange(Models.DescribeScratch(mb, ReduceOps.PartialsLength(s.Device)));
        list.Add(new("block-out", MemoryCategory.Workspace, a));
        if (s.Codec.Enabled)
        {
            list.AddRange(CompressedStash.Describe(s.Codec, s.Stash, l, u, a).Device);
            list.Add(new("boundary-grads", MemoryCategory.BoundaryGrads, u * a));
        }
        else if (s.Stash == StashPlacement.Device)
        {
            list.Add(new("stash", MemoryCategory.Stash, l * u * a));
            list.Add(new("boundary-grads", MemoryCategory.BoundaryGrads, u * a));
        }
        else
        {
            list.AddRange([
                new("stash-in.0", MemoryCategory.Stash, a), new("stash-in.1", MemoryCategory.Stash, a),
                new("stash-out.0", MemoryCategory.Stash, a), new("stash-out.1", MemoryCategory.Stash, a),
                new("boundary-grads.0", MemoryCategory.BoundaryGrads, a), new("boundary-grads.1", MemoryCategory.BoundaryGrads, a)]);
        }
        list.AddRange(MicroBatchInputs.Describe(mb, u, Models.InputsOf(s.Config)).Device);
        if (s.ResidentEmbedding)
            list.AddRange(DeviceLayerOptimizer.Describe(s.Optimizer, [layout.Embedding, layout.Head]));
        return list;
    }

    /// <summary>The relay executor's pinned host buffers (besides the param server's).</summary>
    public static IReadOnlyList<BufferSpec> RelayExecutorHost(PlanSettings s, ModelLayout layout)
    {
        var a = s.MicroBatch.ActivationLength;
        var u = s.MicroBatches;
        var list = new List<BufferSpec> { new("host.grad-norm.sums", MemoryCategory.Other, layout.Layers.Count) };
        if (s.Codec.Enabled)
            list.AddRange(CompressedStash.Describe(s.Codec, s.Stash, layout.Blocks.Count, u, a).Host);
        else if (s.Stash == StashPlacement.Host)
            list.AddRange([new("host.stash", MemoryCategory.Stash, layout.Blocks.Count * u * a), new("host.boundary-grads", MemoryCategory.BoundaryGrads, u * a)]);
        list.AddRange(MicroBatchInputs.Describe(s.MicroBatch, u, Models.InputsOf(s.Config)).Host);
        list.Add(new("host.loss", MemoryCategory.Other, 1));
        return list;
    }

    private static IReadOnlyList<BufferSpec> RelayHost(PlanSettings s, ModelLayout layout)
    {
        int[] onDevice = s.ResidentEmbedding ? [layout.Embedding.Index, layout.Head.Index] : [];
        return [.. EagerParamServer.DescribeHost(layout, s.StateFloatsPerParam, onDevice, s.GradientSlots, s.UpdateMode, s.OptimizerState, s.Precision), .. RelayExecutorHost(s, layout)];
    }

    private static BusTraffic RelayBus(PlanSettings s, ModelLayout layout)
    {
        const int F = sizeof(float);
        long u = s.MicroBatches, l = layout.Blocks.Count, block = BlockLength(layout);
        var edges = layout.Embedding.Length + layout.Head.Length;
        // Forward fetches every block once; the backward fetches all but the top two again (the second from the top is still in its slot).
        var weights = F * ((l + Math.Max(0, l - 2)) * block + (s.ResidentEmbedding ? 0 : edges));
        // Each block's gradients and sum of squares go to the host; the embedding's and head's too when the host updates them,
        // else only their sums of squares.
        var grads = F * (l * block + l + 2 + (s.ResidentEmbedding ? 0 : edges));
        var a = s.MicroBatch.ActivationLength;
        long stash = 0, boundary = 0;
        if (s.Stash == StashPlacement.Host)
        {
            if (s.Codec.Enabled)
            {
                // Every encoded input out once and back once; the exact forward inputs and the boundary gradients stay on the device.
                stash = CompressedStash.Describe(s.Codec, s.Stash, (int)l, (int)u, a).StepBusBytes;
            }
            else
            {
                // Inputs: stored once, fetched for the forward and again for the recomputation; boundary gradients:
                // stored by the head, fetched and stored by every block's backward, fetched by the embedding's.
                stash = 3 * l * u * a * F;
                boundary = (2 * l + 2) * u * a * F;
            }
        }
        return new BusTraffic(weights, grads, stash, boundary, Io(s, uploadsOfInputs: 2 * u + (Models.BlocksReadInputs(s.Config) ? 2 * l * u : 0)));
    }

    /// <summary>
    /// Input bytes of a step: <paramref name="uploadsOfInputs"/> uploads of a micro-batch's ids (and token types and key
    /// mask where the model has them), one of each micro-batch's targets and scatter plans, and the loss read back.
    /// </summary>
    private static long Io(PlanSettings s, long uploadsOfInputs)
    {
        var needs = Models.InputsOf(s.Config);
        long tokens = s.MicroBatch.Tokens, u = s.MicroBatches, plan = EmbeddingScatterPlan.Length(s.MicroBatch.Tokens);
        var inputs = tokens * sizeof(int) * (1 + (needs.TokenTypes ? 1 : 0) + (needs.PadTokenId is null ? 0 : 1));
        var plans = plan * sizeof(int) * (needs.TokenTypes ? 2 : 1);
        return uploadsOfInputs * inputs + u * (tokens * sizeof(int) + plans) + sizeof(float);
    }

    /// <summary>The conventional executor's device buffers, in the order it allocates them.</summary>
    public static IReadOnlyList<BufferSpec> ConventionalDevice(PlanSettings s, ModelLayout layout)
    {
        var mb = s.MicroBatch;
        var a = mb.ActivationLength;
        var list = new List<BufferSpec>();
        foreach (var layer in layout.Layers)
            list.AddRange([new(layer.Name, MemoryCategory.Params, layer.Length), new(layer.Name + ".grads", MemoryCategory.Grads, layer.Length)]);
        list.AddRange(DeviceLayerOptimizer.Describe(s.Optimizer, layout.Layers));
        foreach (var block in layout.Blocks)
            list.AddRange(Models.DescribeActivations(mb, MemoryCategory.Stash, $"{block.Name}.activations"));
        list.AddRange([
            new("block-inputs", MemoryCategory.Stash, layout.Blocks.Count * a),
            new("head-input", MemoryCategory.Workspace, a),
            new("residual-grads", MemoryCategory.BoundaryGrads, a)]);
        list.AddRange(Models.DescribeScratch(mb, ReduceOps.PartialsLength(s.Device)));
        list.AddRange(MicroBatchInputs.Describe(mb, s.MicroBatches, Models.InputsOf(s.Config)).Device);
        list.AddRange([
            new("grad-norm.partials", MemoryCategory.Workspace, ReduceOps.PartialsLength(s.Device)),
            new("grad-norm.sums", MemoryCategory.Workspace, layout.Layers.Count)]);
        return list;
    }

    /// <summary>The conventional executor's pinned host buffers.</summary>
    public static IReadOnlyList<BufferSpec> ConventionalHost(PlanSettings s) =>
        [.. MicroBatchInputs.Describe(s.MicroBatch, s.MicroBatches, Models.InputsOf(s.Config)).Host, new("host.loss", MemoryCategory.Other, 1)];

    private static BusTraffic ConventionalBus(PlanSettings s, ModelLayout layout) =>
        // Only the inputs go up; the sums of squares of every layer's gradients come back for the clipping decision.
        new(0, sizeof(float) * (long)layout.Layers.Count, 0, 0, Io(s, uploadsOfInputs: s.MicroBatches));
}
