// Predicted step time of a plan from the device's calibrated speeds; the repeated block is costed once and scaled by depth.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model;
using L2L.Model.Bert;
using L2L.Training.Optim;

namespace L2L.Training.Planning;

/// <summary>A step-time prediction and its parts, in seconds.</summary>
/// <param name="Compute">Device kernels: the blocks, the embedding, the head and loss, the device optimizer, the codec.</param>
/// <param name="Transfers">Every bus transfer of the step at the calibrated copy speeds, plus a launch cost per copy.</param>
/// <param name="HostUpdate">The param server's optimizer over the host-updated layers.</param>
/// <param name="Step">The step: with overlap (GPUs) the larger of compute and transfers plus one block fetch that nothing hides; without (the CPU accelerator) their sum, plus the host update.</param>
public readonly record struct StepTime(double Compute, double Transfers, double HostUpdate, double Step);

/// <summary>
/// Predicts a step's time from FLOPs and bytes. A transformer's blocks are identical, so (as TAP folds the repeated
/// block) one block's forward and backward are costed once per micro-batch shape — measured, when the calibration
/// profiled the model's block at that shape, else from its GEMMs at their shapes, attention, and its element-wise
/// bytes and launches — and multiplied by depth and micro-batch count; the relay recomputes each block's forward
/// before its backward, the conventional executor does not.
/// </summary>
public sealed class StepTimeModel(DeviceCalibration speeds)
{
    private readonly Dictionary<(int, int), (double Forward, double Backward)> _blocks = new();

    /// <summary>The speeds in use.</summary>
    public DeviceCalibration Speeds => speeds;

    /// <summary>Blocks costed so far (one per distinct micro-batch shape, however many layers and candidates).</summary>
    public int BlocksCosted => _blocks.Count;

    private double Gemm(long m, long n, long k, GemmLayout layout = GemmLayout.NN) => 2.0 * m * n * k / speeds.GemmFlopsPerS(m, n, k, layout) + speeds.LaunchSeconds;

    /// <summary>
    /// The products of one block over <paramref name="tokens"/> rows, as (M, N, K) of the forward: the backward's are
    /// (M, K, N) for the input gradient (NT) and (K, N, M) for the weight gradient (TN).
    /// </summary>
    public static IReadOnlyList<(long M, long N, long K)> BlockProducts(IModelConfig config, long tokens)
    {
        long n = tokens, c = config.Channels;
        return config is BertConfig bert
            ? [(n, c, c), (n, c, c), (n, c, c), (n, c, c), (n, bert.IntermediateSize, c), (n, c, bert.IntermediateSize)]
            : [(n, 3 * c, c), (n, c, c), (n, 4 * c, c), (n, c, 4 * c)];
    }

    /// <summary>Every product a step of <paramref name="config"/> runs at micro-batches of <paramref name="tokens"/> tokens, with its layout: what <c>--calibrate</c> times.</summary>
    public static IEnumerable<(int M, int N, int K, GemmLayout Layout)> Products(IModelConfig config, long tokens)
    {
        var head = (M: tokens, N: (long)config.VocabSize, K: (long)config.Channels);
        foreach (var p in BlockProducts(config, tokens).Append(head))
        {
            yield return ((int)p.M, (int)p.N, (int)p.K, GemmLayout.NN);
            yield return ((int)p.M, (int)p.K, (int)p.N, GemmLayout.NT);
            yield return ((int)p.K, (int)p.N, (int)p.M, GemmLayout.TN);
        }
    }

    private double Elementwise(long bytes, int launches) => bytes / speeds.ElementwiseBytesPerS + launches * speeds.LaunchSeconds;

    /// <summary>One block's forward and backward seconds for one micro-batch of <paramref name="s"/> (costed once per shape).</summary>
    public (double Forward, double Backward) Block(PlanSettings s)
    {
        var key = (s.MicroBatchSize, s.SeqLen);
        if (_blocks.TryGetValue(key, out var cached)) return cached;
        if (speeds.Block(s.Config, s.MicroBatchSize, s.SeqLen) is { } measured)
            return _blocks[key] = (measured.BlockForward, measured.BlockBackward);
        var mb = s.MicroBatch;
        long c = s.Config.Channels;
        // Each backward product is two of the forward's size: the input gradient and the weight gradient.
        var products = BlockProducts(s.Config, mb.Tokens);
        var forward = products.Sum(p => Gemm(p.M, p.N, p.K));
        var backward = products.Sum(p => Gemm(p.M, p.K, p.N, GemmLayout.NT) + Gemm(p.K, p.N, p.M, GemmLayout.TN));
        var attention = 2.0 * mb.Batch * (double)mb.SeqLen * mb.SeqLen * c;
        forward += attention / speeds.AttentionFlopsPerS;
        backward += 2.5 * attention / speeds.AttentionFlopsPerS;
        // Element-wise work: every saved activation written once and read once forward, about twice that backward.
        var saved = Models.DescribeActivations(mb, Precision.Fp32, s.Device).Sum(b => b.Bytes);
        forward += Elementwise(2 * saved, 10);
        backward += Elementwise(4 * saved, 16);
        return _blocks[key] = (forward, backward);
    }

    /// <summary>The predicted step time of <paramref name="plan"/>.</summary>
    public StepTime Predict(ExecutionPlan plan)
    {
        var s = plan.Settings;
        var layout = new ModelLayout(s.Config);
        long u = s.MicroBatches, l = layout.Blocks.Count, n = s.MicroBatch.Tokens, c = s.Config.Channels, v = s.Config.VocabSize;
        var a = s.MicroBatch.ActivationLength;
        var (forward, backward) = Block(s);
        var relay = s.Executor == ExecutorKind.Relay;
        var blocks = l * u * (forward + backward + (relay ? forward : 0));
        // Head: the decoder product forward and its two backward products, the softmax and loss over (N, V); the embedding's gather and scatter.
        var profiled = speeds.Block(s.Config, s.MicroBatchSize, s.SeqLen);
        var head = profiled is { } p ? p.Head + p.Embedding
            : Gemm(n, v, c) + Gemm(n, c, v, GemmLayout.NT) + Gemm(c, v, n, GemmLayout.TN) + Elementwise(3L * n * v * sizeof(float), 4) + Elementwise(6L * a * sizeof(float), 8);
        var compute = blocks + u * head;
        if (relay && s.Codec.Enabled)
            compute += l * u * 2 * Elementwise(2 * a * sizeof(float), 2); // encode after the forward, decode before the recomputation
        // The device optimizer reads weights, gradients and state and writes weights and state.
        var stateFloats = s.Optimizer == OptimizerKind.Sgd ? 0 : 2;
        long deviceUpdated = relay ? (s.ResidentEmbedding ? layout.Embedding.Length + layout.Head.Length : 0) : layout.TotalLength;
        compute += Elementwise(deviceUpdated * sizeof(float) * (3 + 2 * stateFloats), relay ? 2 : layout.Layers.Count);
        var bus = plan.Bus;
        var toDevice = bus.Weights + bus.Io + (bus.Stash + bus.BoundaryGrads) / 2;
        var toHost = bus.Grads + (bus.Stash + bus.BoundaryGrads) / 2;
        var copies = relay ? 2 * l + 2 + (s.Stash == StashPlacement.Host ? 5 * l * u : 0) : 3 * u;
        var transfers = toDevice / speeds.HostToDeviceBytesPerS + toHost / speeds.DeviceToHostBytesPerS + copies * speeds.LaunchSeconds;
        long hostUpdated = relay ? layout.TotalLength - deviceUpdated : 0;
        var hostUpdate = hostUpdated * (double)sizeof(float) / speeds.HostOptimizerBytesPerS;
        double step;
        if (speeds.CopiesOverlap)
        {
            var firstFetch = relay ? layout.Blocks[0].Length * (double)sizeof(float) / speeds.HostToDeviceBytesPerS : 0;
            step = Math.Max(compute, transfers) + firstFetch;
        }
        else
        {
            step = compute + transfers + hostUpdate;
        }
        return new StepTime(compute, transfers, hostUpdate, step);
    }
}
