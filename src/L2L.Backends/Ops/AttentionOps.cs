// Launchers for multi-head scaled-dot-product attention over a fused qkv tensor (B, T, 3C).
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>
/// Causal and/or padded multi-head attention, forward and backward, loaded once per accelerator.
/// Layout as GPT-2: <c>qkv</c> (B, T, 3C) with q, k, v along the last dimension; head <c>h</c> uses channels
/// <c>h*hs .. h*hs+hs-1</c> of each, <c>hs = C / NH</c>; output (B, T, C); scores scaled by <c>1/sqrt(hs)</c>.
/// <c>keyLengths</c> (B, int32) restricts sequence <c>b</c>'s queries to keys <c>0 .. keyLengths[b]-1</c>
/// (values are clamped to [0, T]; a query with no visible key gets zero probabilities and a zero output);
/// an empty view means no padding. <c>keyMask</c> (B, T, int32) hides individual keys: key <c>j</c> of sequence
/// <c>b</c> is attended only where <c>keyMask[b*T + j] != 0</c> (BERT's padding mask, which may hide interior
/// positions); an empty view hides none. The three restrictions combine: a key is attended when it is inside the
/// key length, not after the query when causal, and not masked. Results are deterministic: no atomics.
/// </summary>
public sealed class AttentionOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> _softmax;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims> _values;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims> _scoresBackward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> _qkvBackward;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public AttentionOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _softmax = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionSoftmaxKernel);
        _values = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionValuesKernel);
        _scoresBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionScoresBackwardKernel);
        _qkvBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionQkvBackwardKernel);
    }

    /// <summary>
    /// <c>output</c> (B, T, C) = attention of <c>qkv</c> (B, T, 3C); saves the softmax probabilities <c>probs</c>
    /// (B, NH, T, T), masked entries 0, for <c>Backward</c>.
    /// <c>keyLengths</c> is (B) or empty, <c>keyMask</c> (B, T) or empty. Neither output may alias <c>qkv</c>.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> probs, ArrayView<float> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal)
    {
        var d = Validate(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        Check.Length(output, (long)b * t * c, nameof(output));
        Check.Length(probs, ProbsLength(b, t, nh), nameof(probs));
        _softmax(s, RowLaunch(ProbsLength(b, t, nh) / t), probs, qkv, keyLengths, keyMask, d);
        _values(s, Launch.Elementwise(_accelerator, output.Length), output, probs, qkv, keyLengths, d);
    }

    /// <summary>The forward pass without a per-key mask (<c>keyMask</c> empty).</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> probs, ArrayView<float> qkv,
        ArrayView<int> keyLengths, int b, int t, int c, int nh, bool causal)
        => Forward(s, output, probs, qkv, keyLengths, ArrayView<int>.Empty, b, t, c, nh, causal);

    /// <summary>The scratch length <c>Backward</c> needs: one (B, NH, T, T) tensor for the score gradients.</summary>
    public static long BackwardScratchLength(int b, int t, int c, int nh) => ProbsLength(b, t, nh);

    /// <summary>
    /// Assigns (does not accumulate) <c>dQkv</c> (B, T, 3C), the gradient of the loss with respect to <c>qkv</c>, from
    /// <c>dOutput</c> (B, T, C) and the <c>probs</c> (B, NH, T, T) saved by <c>Forward</c> for the same
    /// <c>qkv</c>, <c>keyLengths</c>, <c>keyMask</c> and causal flag. <c>scratch</c> needs at least
    /// <see cref="BackwardScratchLength"/> elements; its contents are overwritten. <c>dQkv</c> must not alias any input.
    /// Masked keys get exactly zero key and value gradients.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> probs, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal)
    {
        var d = Validate(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        Check.Length(dQkv, qkv.Length, nameof(dQkv));
        Check.Length(dOutput, (long)b * t * c, nameof(dOutput));
        var probsLength = ProbsLength(b, t, nh);
        Check.Length(probs, probsLength, nameof(probs));
        Check.AtLeast(scratch, BackwardScratchLength(b, t, c, nh), nameof(scratch));
        var dScores = scratch.SubView(0, probsLength);
        _scoresBackward(s, RowLaunch(probsLength / t), dScores, dOutput, qkv, probs, keyLengths, d);
        _qkvBackward(s, Launch.Elementwise(_accelerator, dQkv.Length), dQkv, dOutput, qkv, probs, dScores, keyLengths, keyMask, d);
    }

    /// <summary>The backward pass without a per-key mask (<c>keyMask</c> empty).</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> probs, ArrayView<float> scratch, ArrayView<int> keyLengths, int b, int t, int c, int nh, bool causal)
        => Backward(s, dQkv, dOutput, qkv, probs, scratch, keyLengths, ArrayView<int>.Empty, b, t, c, nh, causal);

    private static long ProbsLength(int b, int t, int nh) => (long)b * nh * t * t;

    private static AttentionDims Validate(ArrayView<float> qkv, ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal)
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        Check.Positive(c, nameof(c));
        Check.Positive(nh, nameof(nh));
        if (c % nh != 0)
            throw new ArgumentException($"The channel count c = {c} is not a multiple of the head count nh = {nh}.", nameof(c));
        Check.Length(qkv, 3L * b * t * c, nameof(qkv));
        if (keyLengths.Length != 0)
            Check.Length(keyLengths, b, nameof(keyLengths));
        if (keyMask.Length != 0)
            Check.Length(keyMask, (long)b * t, nameof(keyMask));
        return new AttentionDims(b, t, c, nh, causal);
    }

    // A thread owns a whole row of T keys, so rows are few and heavy: smaller groups spread them over more
    // multiprocessors on a GPU.
    private KernelConfig RowLaunch(long rows)
    {
        var group = Launch.GroupSize(_accelerator, 64);
        var waves = _accelerator.AcceleratorType == AcceleratorType.CPU ? 1L : 4L;
        var maxGroups = Math.Max(1L, _accelerator.MaxNumThreads * waves / group);
        var groups = Math.Clamp((rows + group - 1) / group, 1, maxGroups);
        return new KernelConfig((int)groups, group);
    }
}
